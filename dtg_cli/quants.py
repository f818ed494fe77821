"""The GGUF formats dtg writes and reads: their names, file suffixes and llama.cpp file types."""

from __future__ import annotations

from collections.abc import Sequence

from dtg_cli.errors import UsageError

# GGUF general.file_type values (llama_ftype) of the formats dtg writes.
FILE_TYPES = {"f16": 1, "q8_0": 7, "q6_k": 18}
FILE_SUFFIXES = {"f16": "F16", "q8_0": "Q8_0", "q6_k": "Q6_K"}
QUANTS = tuple(FILE_TYPES)  # ("f16", "q8_0", "q6_k")
DEFAULT_QUANT = "q8_0"


def parse_quant(value: str) -> str:
    """One quant name, as --quant of generate and batch takes it."""
    quant = value.strip().lower()
    if quant not in QUANTS:
        raise UsageError(f"--quant: {value!r} is not one of {', '.join(QUANTS)}")
    return quant


def parse_quants(value: str | Sequence[str]) -> list[str]:
    """'f16,q8_0' -> ['f16', 'q8_0'], validated, in the order given, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    quants: list[str] = []
    for item in (i.strip().lower() for i in items):
        if item not in QUANTS:
            raise UsageError(f"unknown quant {item!r}; choose from {', '.join(QUANTS)}")
        if item not in quants:
            quants.append(item)
    if not quants:
        raise UsageError(f"no quant given; choose from {', '.join(QUANTS)}")
    return quants
