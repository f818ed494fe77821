"""Option values without pydantic on the common path.

Typer 0.29 turns every option value into its Python type through a pydantic `TypeAdapter`; importing
pydantic and building one adapter per option costs about 0.1 s of every `dtg` process, more than
llama.cpp takes to load a model. Our options are plain `str`, `int`, `float`, `bool` and `list[str]`,
whose well-formed values need no such machinery. `install` gives each such option a converter that handles
those values itself and hands anything else (a malformed number, a value out of range, a type it does
not know) to Typer's own converter, so values and error messages stay exactly Typer's
(`tests/test_cli_coercion.py` checks both on a corpus of inputs).

This leans on two internals of Typer (`typer._coercion.RuntimeParam` and a parameter's lazily built
`_runtime_param`), so it is used only with the Typer releases it was tested with (`TESTED`); with any
other, `install` does nothing and Typer converts every value itself.
"""

from __future__ import annotations

from typing import Any

import typer

TESTED = ("0.29.",)  # Typer releases whose internals this was checked against (tests/test_cli_coercion.py)

RuntimeParam = None
if typer.__version__.startswith(TESTED):
    from typer._coercion import RuntimeParam, build_runtime_param


def _quick_int(value: Any) -> int | None:
    """An integer as pydantic's lax mode reads it, for the forms Python's `int` reads the same way."""
    if isinstance(value, int) and not isinstance(value, bool):  # a default
        return value
    try:
        return int(value) if isinstance(value, str) and value.isascii() else None
    except ValueError:
        return None


def _quick_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # a default
        return float(value)
    try:
        return float(value) if isinstance(value, str) and value.isascii() else None
    except ValueError:
        return None


_QUICK = {int: _quick_int, float: _quick_float}


if RuntimeParam is not None:

    class QuickParam(RuntimeParam):
        """Converts well-formed `str`, `int`, `float`, `bool` and `list[str]` values; defers everything else."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            quick = self._quick(value)
            if quick is not None:
                return quick
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)

        def _quick(self, value: Any) -> Any:
            annotation = self.annotation
            if annotation is str:
                return value if isinstance(value, str) else None
            if annotation is bool:  # a flag: click gives a bool or, when it is absent, None (never reaches here)
                return value if isinstance(value, bool) else None
            if annotation == list[str]:
                ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
                return list(value) if ok else None
            number = _QUICK[annotation](value)
            info = self.parameter_info
            if number is None or (info.min is not None and not info.min <= number) or (info.max is not None and not number <= info.max):
                return None  # out of range (NaN too): Typer words the error
            return number


def _takes(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", False) is not None:
        return False
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None or info.clamp:
        return False
    return descriptor.annotation in (str, int, float, bool) or descriptor.annotation == list[str]


def install(command: Any, parent: Any = None) -> Any:
    """Give every option of `command` and its subcommands that `QuickParam` handles that converter,
    the `--help` flags included (click makes those on first use, with the names a context gives it)."""
    if RuntimeParam is None:
        return command
    context = command.context_class(command, parent=parent, **command.context_settings)
    for param in [*command.params, command.get_help_option(context)]:
        if param is not None and _takes(param):
            descriptor = param.type_descriptor
            param._runtime_param = QuickParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    for sub in getattr(command, "commands", {}).values():
        install(sub, context)
    return command
