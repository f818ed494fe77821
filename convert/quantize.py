"""Quantize an F16 GGUF with llama.cpp's own quantizer (gguf-py cannot write Q6_K)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from dtg_cli.errors import DtgError
from dtg_cli.llama import bindings

# GGUF general.file_type values (llama_ftype) of the formats dtg writes.
FILE_TYPES = {"f16": 1, "q8_0": 7, "q6_k": 18}
FILE_SUFFIXES = {"f16": "F16", "q8_0": "Q8_0", "q6_k": "Q6_K"}
QUANTS = tuple(FILE_TYPES)  # ("f16", "q8_0", "q6_k")


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """Write `src` (an F16 GGUF) to `dst` in `quant` (q8_0 or q6_k)."""
    lib = bindings()
    params = lib.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[quant]
    params.nthread = threads or 0
    rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise DtgError(f"llama.cpp failed to quantize {src.name} to {quant.upper()} (code {rc}); rerun with --verbose")
