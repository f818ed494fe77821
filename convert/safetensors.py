"""Streaming reader for safetensors checkpoints (single file or sharded with an index).

Tensors are read one at a time with plain file reads rather than a memory map, so the resident
memory of a conversion stays at about one tensor, whatever the checkpoint's size.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtg_cli import jsontext
from dtg_cli.errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset of the first byte in the file
    nbytes: int


def _read_header(path: Path) -> list[TensorEntry]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (too short); download it again")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"{path}: corrupt or truncated safetensors header; download it again")
            header = jsontext.loads(f.read(header_len))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    except (UnicodeDecodeError, jsontext.BadJSON) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e}); download it again") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header; download it again")

    data_start = 8 + header_len
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, offsets = (info.get(k) for k in ("dtype", "shape", "data_offsets")) if isinstance(info, dict) else (None,) * 3
        if not (_counts(shape, most=8) and _counts(offsets, most=2) and len(offsets) == 2 and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{path}: corrupt safetensors header entry for {name!r}")
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}; only F32, F16 and BF16 checkpoints are supported")
        shape, (begin, end) = tuple(shape), offsets
        nbytes = end - begin
        if nbytes != math.prod(shape) * _DTYPES[dtype].itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} has a size that does not match its shape; the file is corrupt")
        if data_start + end > size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end:,} but the file has {size:,} bytes; download it again"
            )
        entries.append(TensorEntry(name, path, dtype, shape, data_start + begin, nbytes))
    return entries


def _counts(value, most: int) -> bool:
    """A list of at most `most` whole numbers from 0 (JSON's 2.0, a string or true is none)."""
    return isinstance(value, list) and len(value) <= most and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


class SafetensorsCheckpoint:
    """The tensors of a checkpoint directory, by name, read on demand as float32."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        single = self.directory / SINGLE_FILE
        if index.is_file():
            try:
                weight_map = jsontext.loads(index.read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index}: unreadable safetensors index") from e
            # A shard is a file of this folder, named by the index: never a path that leads out of it.
            outside = [s for s in shards if not isinstance(s, str) or Path(s).name != s or s in ("", ".", "..")]
            if outside:
                raise CheckpointError(f"{index}: the weight map names {outside[0]!r}, which is not a file name in the checkpoint folder")
            files = [self.directory / s for s in shards]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{self.directory}: shards listed in {INDEX_FILE} are missing: {', '.join(missing)}")
        elif single.is_file():
            files = [single]
        else:
            raise CheckpointError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}; only safetensors checkpoints are supported")
        self.entries: dict[str, TensorEntry] = {}
        for f in files:
            for entry in _read_header(f):
                self.entries[entry.name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return list(self.entries)

    def dtypes(self) -> set[str]:
        return {e.dtype for e in self.entries.values()}

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def load(self, name: str) -> np.ndarray:
        """Read one tensor and return it as a float32 array."""
        entry = self.entries[name]
        raw_dtype = _DTYPES[entry.dtype]
        try:
            with entry.path.open("rb") as f:
                f.seek(entry.offset)
                data = np.fromfile(f, dtype=raw_dtype, count=entry.nbytes // raw_dtype.itemsize)
        except OSError as e:
            raise CheckpointError(f"{entry.path}: cannot read tensor {name!r} ({e.strerror})") from e
        if data.nbytes != entry.nbytes:
            raise CheckpointError(f"{entry.path} is truncated at tensor {name!r}; download it again")
        if entry.dtype == "BF16":
            # bf16 is the upper half of an f32: widen the bits, then reinterpret.
            data = (data.astype(np.uint32) << 16).view(np.float32)
        else:
            data = data.astype(np.float32, copy=False)
        return data.reshape(entry.shape)
