"""The `dtg` command line: a shell over the library. Each command parses its flags, calls one library
function and prints; `app.py` holds the Typer app and the one error boundary, `options.py` the options
several commands share, `ui.py` what is shown on a terminal, and one module per command group.

A command imports the library inside its body: `dtg --help` and `dtg --version` then load neither numpy,
llama.cpp nor the tag database. Command modules do without `from __future__ import annotations`: Typer
reads every command's signature on every run, and would compile annotations kept as strings each time."""

from __future__ import annotations

import signal
import sys

from dtg_cli.cli import batch, convert, generate, models, serve, tags  # noqa: F401 - each registers its commands
from dtg_cli.cli.app import app, interrupted_exit_code, keep_stdout_for_results, on_signal

__all__ = ["app", "main", "keep_stdout_for_results"]


def main(help_page: bool = False) -> None:
    """Run the command line. A `help_page` request prints on the real stdout, so that rich sizes the page
    by the terminal stdout is on; any other command keeps stdout for results (`keep_stdout_for_results`)."""
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(sys.stderr, "reconfigure"):  # a real text stream (not None, not a caller's buffer)
        sys.stderr.reconfigure(errors="backslashreplace")  # a message in any encoding (PYTHONIOENCODING=ascii)
    if not help_page:
        keep_stdout_for_results()
    try:
        app()
    except KeyboardInterrupt as e:  # raised outside a command, e.g. while importing
        sys.exit(interrupted_exit_code(e))
