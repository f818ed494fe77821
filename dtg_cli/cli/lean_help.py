"""Typer's help renderer without the two rich modules a `dtg` page never uses, for the pages Typer renders
(those the help book, `dtg_cli/helpbook.py`, does not print).

`typer.rich_utils`, which renders every `--help` page, imports `rich.markdown` (with markdown-it and
pygments) and `rich.traceback` at its top: a first `dtg --help` took 0.17 s with them and 0.12 s without
(on a 2-core AMD EPYC, `benchmarks/startup_bench.py`). It uses them only for Markdown help text (dtg's
is rich markup) and for pretty tracebacks (dtg's error boundary prints its own one-line errors).
`import_renderer` imports `typer.rich_utils` with two stand-in classes in their place, each of which
imports the real class the first time it is used, so a page that did need one still renders exactly as
before (`tests/test_cli_lean_help.py`).

Used only with the Typer releases it was checked against (`coercion.TESTED`).
"""

from __future__ import annotations

import importlib
import sys
import types

import typer

from dtg_cli.cli.coercion import TESTED

_DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


class _StandIn(type):
    """A class that is its real namesake as soon as it is called or asked for an attribute."""

    def real(cls) -> type:
        return getattr(importlib.import_module(cls.module), cls.__name__)

    def __call__(cls, *args, **kwargs):
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls.real(), name)


def import_renderer() -> None:
    """Import `typer.rich_utils` with stand-ins for the modules in `_DEFERRED` not yet imported."""
    if "typer.rich_utils" in sys.modules or not typer.__version__.startswith(TESTED):
        return
    stand_ins = {}
    for module, name in _DEFERRED.items():
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, _StandIn(name, (), {"module": module}))
            stand_ins[module] = stand_in
    sys.modules.update(stand_ins)
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]
