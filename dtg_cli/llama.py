"""Thin wrappers over llama-cpp-python's raw bindings that own the native objects.

Every model dtg loads goes through `Model`, which is where the loader-wide workarounds live.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from dtg_cli.errors import MissingDependencyError, ModelFileError
from dtg_cli.gguf_header import check_hyperparameters, read_metadata

_verbose = False
_log_callback = None  # kept alive: llama.cpp holds a raw pointer to it
_on_log_code = None  # the Python code the callback runs (`in_log_callback`)


def _import_llama_cpp():
    """llama-cpp-python's package with its ctypes bindings, imported on first use (llama.cpp loads with it).

    The package's __init__ also imports its high-level `Llama` class and chat templates (jinja2): a tenth
    of a second of every `dtg generate` that dtg never uses. So the package is registered without running
    its __init__, the bindings module is imported alone and its names put on the package (as the __init__
    does), and the __init__ runs on first access to any other name (`llama_cpp.Llama`, `__version__`)."""
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"]
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.loader is None:
        raise ImportError("llama_cpp")
    package = importlib.util.module_from_spec(spec)
    sys.modules["llama_cpp"] = package
    try:
        ctypes_bindings = importlib.import_module("llama_cpp.llama_cpp")
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update({k: v for k, v in vars(ctypes_bindings).items() if not k.startswith("_")})

    def rest_of_the_package(name: str):
        del package.__getattr__  # once: the real __init__ now fills the package
        spec.loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'llama_cpp' has no attribute {name!r}") from None

    package.__getattr__ = rest_of_the_package
    return package


def bindings():
    """The llama_cpp module, imported on first use with its log output routed through dtg."""
    global _log_callback, _on_log_code
    try:
        llama_cpp = _import_llama_cpp()
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise MissingDependencyError("llama-cpp-python is not installed: pip install llama-cpp-python") from e
    if _log_callback is None:

        def _on_log(level, text, user_data):
            if _verbose:
                os.write(2, text)

        _on_log_code = _on_log.__code__
        _log_callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def in_log_callback(frame) -> bool:
    """Whether `frame` is llama.cpp's log callback running: an exception raised there (a Ctrl-C landing
    in it) is printed and dropped by ctypes, not raised in the code that called llama.cpp."""
    return _log_callback is not None and frame is not None and frame.f_code is _on_log_code


def set_verbose(verbose: bool) -> None:
    """Show llama.cpp's own log lines on stderr (hidden by default)."""
    global _verbose
    _verbose = verbose


def verbose() -> bool:
    return _verbose


class Model:
    """A GGUF model loaded for inference."""

    def __init__(self, path: str | Path, n_gpu_layers: int = -1):
        self.ptr = None  # until llama.cpp has loaded it (close() runs on a half-made Model too)
        lib = bindings()
        self._lib = lib
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file")

        self.header = read_metadata(self.path)  # the GGUF's metadata, as read before llama.cpp loads it
        check_hyperparameters(self.path, self.header)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        # llama.cpp's extra buffer types repack quantized weights for AMX on Intel CPUs that have it, and
        # that path crashes (SIGSEGV in ggml_backend_amx_mul_mat) on every quantized model dtg runs.
        # Plain CPU buffers cost nothing measurable at these model sizes.
        params.use_extra_bufts = False
        self._lib = lib
        self.n_gpu_layers = n_gpu_layers
        self.ptr = lib.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.ptr:
            raise ModelFileError(
                f"{self.path}: llama.cpp could not load this GGUF (corrupt or unsupported); "
                "convert or download it again (--verbose shows llama.cpp's reason)"
            )
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    @property
    def has_text_vocab(self) -> bool:
        """False for word-level models, whose GGUF declares no llama.cpp tokenizer."""
        return self._lib.llama_vocab_type(self.vocab) != self._lib.LLAMA_VOCAB_TYPE_NONE

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama.cpp's own tokenization (SentencePiece models only)."""
        if not self.has_text_vocab:
            # llama.cpp aborts the process on any text call with a vocabulary of type none.
            raise ModelFileError(f"{self.path}: this model has no llama.cpp tokenizer; use dtg_cli.wordlevel")
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            tokens = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        return list(tokens[:n])

    @property
    def n_ctx_train(self) -> int:
        return self._lib.llama_model_n_ctx_train(self.ptr)

    @property
    def kv_bytes_per_token(self) -> int:
        """Memory of one position in the KV cache (F16 keys and values in every layer)."""
        lib = self._lib
        head_dim = lib.llama_model_n_embd(self.ptr) // lib.llama_model_n_head(self.ptr)
        return 2 * 2 * lib.llama_model_n_layer(self.ptr) * lib.llama_model_n_head_kv(self.ptr) * head_dim

    @property
    def offloads(self) -> bool:
        """Whether layers go to a GPU: asked for, and this build of llama.cpp can."""
        return self.n_gpu_layers != 0 and bool(self._lib.llama_supports_gpu_offload())

    def max_sequences(self) -> int:
        return int(self._lib.llama_max_parallel_sequences())

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None when the file does not have the key."""
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = n + 1

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (SentencePiece models only); special tokens give b""."""
        if not self.has_text_vocab:
            raise ModelFileError(f"{self.path}: this model has no llama.cpp tokenizer; use dtg_cli.wordlevel")
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def close(self) -> None:
        if self.ptr:
            self._lib.llama_model_free(self.ptr)
            self.ptr = None

    def __del__(self):
        self.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Context:
    """An inference context (KV cache) on a loaded model, for one sequence or for several decoded together.

    Each sequence has its own KV stream of n_ctx / n_seq_max cells (llama.cpp's non-unified cache), so a
    sequence attends only to its own cells. Its logits can still depend on the shape of the decode it is
    in (`dtg_cli.decoding` keeps that shape fixed).
    """

    def __init__(self, model: Model, n_ctx: int = 1024, n_batch: int = 512, n_seq_max: int = 1, n_threads: int | None = None):
        lib = model._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_seq_max
        params.kv_unified = False
        threads = n_threads or os.cpu_count() or 1
        params.n_threads = threads
        params.n_threads_batch = threads
        self._lib = lib
        self.model = model
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self._batch = None
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise ModelFileError(f"{model.path}: llama.cpp could not create a context (out of memory?)")
        self._memory = lib.llama_get_memory(self.ptr)

    @property
    def n_ctx(self) -> int:
        """Cells per sequence."""
        return self._lib.llama_n_ctx(self.ptr) // self.n_seq_max

    def clear(self, seq: int) -> None:
        """Forget everything of one sequence."""
        self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def copy(self, src: int, dst: int) -> None:
        """Make sequence `dst` a copy of sequence `src` (its whole KV stream; llama.cpp copies the data at
        the start of the next decode)."""
        self._lib.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def decode_many(self, rows: list[tuple[int, list[int], int, bool]]) -> list[np.ndarray | None]:
        """One llama_decode over several sequences. Each row is (sequence, tokens, position of the first
        token, whether to return the logits after its last token). Returns, per row, those logits as a view
        that the next decode overwrites, or None."""
        ends = self._submit(rows, every_position=False)
        shape = (self.model.n_vocab,)
        return [None if end is None else np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ptr, end), shape=shape) for end in ends]

    def logits(self, token_ids: list[int]) -> np.ndarray:
        """Decode `token_ids` from position 0 as sequence 0, in chunks of n_batch; the logits at every position."""
        if len(token_ids) > self.n_ctx:
            raise ModelFileError(f"{self.model.path}: {len(token_ids)} tokens do not fit the context of {self.n_ctx}")
        self.clear(0)
        out = np.empty((len(token_ids), self.model.n_vocab), dtype=np.float32)
        for start in range(0, len(token_ids), self.n_batch):
            chunk = token_ids[start : start + self.n_batch]
            self._submit([(0, chunk, start, True)], every_position=True)
            for i in range(len(chunk)):
                out[start + i] = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ptr, i), shape=(self.model.n_vocab,))
        return out

    def _submit(self, rows: list[tuple[int, list[int], int, bool]], every_position: bool) -> list[int | None]:
        """Fill the reused llama_batch with `rows` and decode it; returns each row's last batch index when
        its logits were asked for."""
        lib = self._lib
        total = sum(len(tokens) for _, tokens, _, _ in rows)
        if total > self.n_batch:  # writing past the batch's arrays would corrupt memory
            raise ValueError(f"{total} tokens in one decode; the batch holds {self.n_batch}")
        if self._batch is None:
            self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        batch = self._batch
        ends: list[int | None] = []
        n = 0
        for seq, tokens, pos, want in rows:
            if pos + len(tokens) > self.n_ctx:
                raise ModelFileError(f"{self.model.path}: {pos + len(tokens)} tokens do not fit the context of {self.n_ctx}")
            for i, tok in enumerate(tokens):
                batch.token[n] = tok
                batch.pos[n] = pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = every_position
                n += 1
            if want:
                batch.logits[n - 1] = 1
            ends.append(n - 1 if want else None)
        batch.n_tokens = n
        rc = lib.llama_decode(self.ptr, batch)
        if rc != 0:
            raise ModelFileError(f"{self.model.path}: llama_decode failed with code {rc}")
        return ends

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ptr:
            self._lib.llama_free(self.ptr)
            self.ptr = None

    def __del__(self):
        self.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
