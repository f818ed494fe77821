"""The `dtg` command line: a shell over the library. Each command parses its flags, calls one library
function and prints; `app.py` holds the Typer app and the one error boundary, `options.py` the options
several commands share, `ui.py` what is shown on a terminal, and one module per command group.

A command imports the library inside its body: `dtg --help` and `dtg --version` then load neither numpy,
llama.cpp nor the tag database. Command modules do without `from __future__ import annotations`: Typer
reads every command's signature on every run, and would compile annotations kept as strings each time."""

from __future__ import annotations

import sys

from dtg_cli.cli import batch, convert, generate, models, tags  # noqa: F401 - each registers its commands
from dtg_cli.cli.app import app, keep_stdout_for_results
from dtg_cli.cli.lean_help import import_renderer

__all__ = ["app", "main", "keep_stdout_for_results"]


def main(help_page: str | None = None) -> None:
    """Run the command line. `help_page`: the `helpcache` key of the page this request prints, which is
    kept for the next identical request if the command exits 0."""
    recorder = None
    if help_page is None:
        keep_stdout_for_results()
    else:  # a page only, on the real stdout: rich sizes it by the terminal stdout is on, as `helpbook` does
        from dtg_cli.helpcache import Recorder  # only for a page to keep

        sys.stdout = recorder = Recorder(sys.stdout)
        import_renderer()  # Typer's page renderer without the rich modules a page does not use
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command, e.g. while importing
        sys.exit(130)
    except SystemExit as e:
        if recorder is not None and e.code in (0, None):
            recorder.keep(help_page)
        raise
