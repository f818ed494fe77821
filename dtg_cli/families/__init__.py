"""The model families dtg runs, one module each, behind the `dtg_cli.family.Family` interface.

A new family is a module with a `FAMILY` object, listed in `FAMILIES`; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from dtg_cli.errors import ModelFileError
from dtg_cli.families import dantaggen, dart_v2, tipo
from dtg_cli.family import Family, PromptFormat

# In the order they are asked whether they read a GGUF: a more specific family before a more general one.
FAMILIES: list[Family] = [dart_v2.FAMILY, tipo.FAMILY, dantaggen.FAMILY]


def formats() -> dict[str, PromptFormat]:
    """Every prompt format of every family, by name."""
    return {f.name: f for family in FAMILIES for f in family.formats}


def named(name: str) -> Family:
    """The family called `name` (a registry entry's `family`)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def family_of_format(format_name: str) -> Family:
    return named(formats()[format_name].family)


def detect(metadata: dict[str, Any], path) -> Family:
    """The family a GGUF belongs to, from its metadata."""
    for family in FAMILIES:
        if family.reads(metadata):
            return family
    raise ModelFileError(f"{path}: no model family dtg runs reads this GGUF's vocabulary ({', '.join(f.name for f in FAMILIES)})")
