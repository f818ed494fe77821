"""A GGUF file's metadata, read from its header alone, and the sanity checks made before llama.cpp sees it.

llama.cpp aborts the whole process (and prints a debugger backtrace) on some impossible hyperparameters,
such as zero experts or a hundred thousand layers. Reading the header costs a few milliseconds and no
import of gguf-py, so every model is checked before it is loaded.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dtg_cli.errors import ModelFileError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_KEYS = 1 << 16
_MAX_STRING = 64 << 20  # one string: tokenizer.huggingface.json is a few MB
_MAX_STRINGS = 256 << 20  # all the strings of a header together


@dataclass(frozen=True)
class ArrayInfo:
    """An array value: its element type and length, and for an array of strings (a vocabulary) its items
    as bytes; numbers are not read."""

    element_type: int
    length: int
    strings: tuple[bytes, ...] | None = None

    def __contains__(self, text: str) -> bool:
        return self.strings is not None and text.encode("utf-8") in self.strings


class _Truncated(Exception):
    pass


# Bytes per block and elements per block of the ggml types dtg writes or reads (ggml.h's type table).
_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 8: (34, 32), 14: (210, 256), 30: (2, 1)}  # F32, F16, Q8_0, Q6_K, BF16


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the tensor data

    @property
    def n_bytes(self) -> int | None:
        size = _TYPE_SIZES.get(self.ggml_type)
        return None if size is None else self.n_elements // size[1] * size[0]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    """What a GGUF file says before its tensor data."""

    metadata: dict[str, Any]
    tensors: list[TensorInfo]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The key-value metadata of a GGUF file; arrays are given as `ArrayInfo`. Raises ModelFileError for a
    file that is not a readable GGUF."""
    return read_header(path, tensors=False).metadata


def read_header(path: str | Path, tensors: bool = True) -> Header:
    """The metadata and (unless `tensors` is False) the tensor table of a GGUF file: the one reader of GGUF
    files outside the converter."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            f = _Bounded(raw, path.stat().st_size)
            if f.read(4) != b"GGUF":
                raise ModelFileError(f"{path}: not a GGUF file (no GGUF magic); download or convert it again")
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version not in (2, 3):
                raise ModelFileError(f"{path}: GGUF version {version} is not one dtg reads (2 or 3)")
            if n_kv > _MAX_KEYS or n_tensors > _MAX_KEYS:
                raise ModelFileError(f"{path}: a header that claims {n_kv} metadata keys and {n_tensors} tensors; the file is damaged")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _string(f).decode("utf-8", "replace")
                (kind,) = struct.unpack("<I", _read(f, 4))
                meta[key] = _value(f, kind)
            table = []
            for _ in range(n_tensors if tensors else 0):
                name = _string(f).decode("utf-8", "replace")
                (n_dims,) = struct.unpack("<I", _read(f, 4))
                if n_dims > 8:
                    raise ValueError(f"a tensor of {n_dims} dimensions")
                shape = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
                ggml_type, offset = struct.unpack("<IQ", _read(f, 12))
                table.append(TensorInfo(name, tuple(shape), ggml_type, offset))
            if table:
                _check_data_size(path, f.tell(), meta, table)
            return Header(meta, table)
    except _Truncated:
        raise ModelFileError(f"{path}: the GGUF header is truncated; download or convert it again") from None
    except (ValueError, struct.error) as e:
        raise ModelFileError(f"{path}: a damaged GGUF header ({e}); download or convert it again") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read it ({e.strerror})") from None


def _check_data_size(path: Path, header_end: int, meta: dict[str, Any], table: list[TensorInfo]) -> None:
    """A file cut short (an interrupted download or copy) still has its whole header: the tensor table
    says how far its data must reach."""
    alignment = meta.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        return
    data_start = -(-header_end // alignment) * alignment
    ends = [t.offset + t.n_bytes for t in table if t.n_bytes is not None]
    need = data_start + max(ends, default=0)
    have = path.stat().st_size
    if have < need:
        raise ModelFileError(f"{path}: truncated ({have} bytes; its tensors need {need}); download or convert it again")


class _Bounded:
    """A GGUF file read so that no length it claims is allocated before it is checked: never past the end
    of the file, and no more string bytes than _MAX_STRING each and _MAX_STRINGS in all."""

    def __init__(self, f: BinaryIO, size: int):
        self._f = f
        self._size = size
        self._strings = _MAX_STRINGS

    def read(self, n: int) -> bytes:
        if n > self._size - self._f.tell():
            raise _Truncated
        return self._f.read(n)

    def string(self, n: int) -> bytes:
        if n > _MAX_STRING or n > self._strings:
            raise ValueError(f"a string of {n} bytes" if n > _MAX_STRING else f"more than {_MAX_STRINGS} bytes of strings")
        self._strings -= n
        return _read(self, n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _string(f: _Bounded) -> bytes:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return f.string(n)


def _value(f: _Bounded, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f).decode("utf-8", "replace")
    if kind == _ARRAY:
        element, length = struct.unpack("<IQ", _read(f, 12))
        if element == _STRING:
            strings = []
            for _ in range(length):
                strings.append(_string(f))
            return ArrayInfo(element, length, tuple(strings))
        elif element in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[element]) * length, 1)
        else:
            raise ValueError(f"an array of type {element}")
        return ArrayInfo(element, length)
    raise ValueError(f"value type {kind}")


def _check_norm_epsilon(path: str | Path, meta: dict[str, Any]) -> None:
    """llama.cpp asserts eps >= 0 (an abort), and a NaN or infinite one makes every output NaN."""
    arch = meta.get("general.architecture")
    key = f"{arch}.attention.layer_norm_rms_epsilon"
    if key in meta:
        eps = meta[key]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and 0 < eps < 1):
            raise ModelFileError(f"{path}: {key} is {eps!r}; a model dtg runs has a positive value below 1")


# Bounds of the hyperparameters of any model dtg runs, with room to spare; llama.cpp's own limits are
# LLAMA_MAX_EXPERTS (512) and GGML's 512 threads.
BOUNDS = {
    "block_count": (1, 1024),
    "context_length": (1, 1 << 20),
    "embedding_length": (1, 1 << 16),
    "feed_forward_length": (1, 1 << 18),
    "attention.head_count": (1, 1024),
    "attention.head_count_kv": (1, 1024),
    "expert_count": (1, 512),
    "vocab_size": (1, 1 << 20),
}


def check_hyperparameters(path: str | Path, meta: dict[str, Any]) -> None:
    """Refuse, in one line, values that would make llama.cpp abort or misbehave."""
    _check_norm_epsilon(path, meta)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{path}: no general.architecture in the GGUF metadata; convert it again")
    values: dict[str, int] = {}
    for name, (low, high) in BOUNDS.items():
        key = f"{arch}.{name}"
        if key not in meta:
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelFileError(f"{path}: {key} is {value!r}; a model dtg runs has {low} to {high}")
        values[name] = value
    used = meta.get(f"{arch}.expert_used_count")
    if "expert_count" in values or used is not None:
        experts = values.get("expert_count", 0)
        if isinstance(used, bool) or not isinstance(used, int) or not 1 <= used <= experts:
            raise ModelFileError(f"{path}: {arch}.expert_used_count is {used!r} with expert_count {experts}; it must be 1 to expert_count")
    heads, kv_heads = values.get("attention.head_count"), values.get("attention.head_count_kv")
    if heads and kv_heads and heads % kv_heads:
        raise ModelFileError(f"{path}: {arch}.attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}")
