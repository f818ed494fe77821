"""Writes the help book (`dtg_cli.helpbook`): the renderables Typer's renderer builds for every page of
`dtg`, from `dtg --help` down to each subcommand's. `setup.py` runs it when dtg is built:
`python -m dtg_cli.cli.pages OUT.jsonl`.

Only with the Typer releases it was checked against (`coercion.TESTED`). Each page is built twice, with
click told of a terminal 50 and 300 columns wide (the narrowest and widest it lays a usage line out
for); a page whose renderables differ between the two depends on the terminal, and is left out of the
book for Typer to render.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import typer
import typer.main
from typer import rich_utils

from dtg_cli import helpbook
from dtg_cli.cli import app
from dtg_cli.cli.coercion import TESTED

PROGRAM = "dtg"


class _Stdout:
    """Stands in for stdout: what click writes there itself (a line end after the page) is appended to
    `printed`, in order with what Typer's console is asked to print."""

    def __init__(self, printed: list, real):
        self._printed = printed
        self.encoding, self.errors = real.encoding, real.errors

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as a text stream answers; click probes with b""
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._printed.append((None, text, None))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextmanager
def _recording(printed: list):
    """Typer's help console, with what it is asked to print appended to `printed` instead."""
    make = rich_utils._get_rich_console

    def recording_console(stderr: bool = False):
        console = make(stderr)
        console.print = lambda *objects, **options: printed.append((console, objects, options))
        return console

    rich_utils._get_rich_console = recording_console
    stdout, sys.stdout = sys.stdout, _Stdout(printed, sys.stdout)
    try:
        yield
    finally:
        rich_utils._get_rich_console = make
        sys.stdout = stdout


def _page(command, words: list[str], columns: int) -> list | None:
    """The page of `dtg WORDS --help` written down, or None where the book cannot hold it."""
    printed: list = []
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        with _recording(printed):
            code = command.main(args=[*words, "--help"], prog_name=PROGRAM, standalone_mode=False)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    if code not in (0, None) or not printed:
        return None
    page = []
    for console, objects, options in printed:
        if console is None:  # written to stdout
            page.append(objects)
            continue
        if len(objects) != 1:
            return None
        if any(name != "style" and not isinstance(value, bool | int | str | None) for name, value in options.items()):
            return None
        try:
            options = {
                name: helpbook.encode_style(value, console.get_style) if name == "style" else value for name, value in options.items()
            }
            page.append([helpbook.encode(objects[0], console.get_style), options])
        except helpbook.Unsupported:
            return None
    return page


def _command_words(command, words: list[str]):
    yield words
    for name, inner in sorted(getattr(command, "commands", {}).items()):
        if not inner.hidden:
            yield from _command_words(inner, [*words, name])


def build(application: typer.Typer = app) -> dict:
    """The help book of dtg (or of another Typer app), with the installed Typer."""
    command = typer.main.get_command(application)
    pages = {}
    for words in _command_words(command, []):
        narrow, wide = _page(command, words, 50), _page(command, words, 300)
        if narrow is not None and narrow == wide:
            pages[" ".join(words)] = narrow
    versions = {name: helpbook.installed_version(name) for name in ("typer", "rich")}
    return {"format": helpbook.FORMAT, **versions, "program": PROGRAM, "pages": pages}


def main() -> None:
    if not typer.__version__.startswith(TESTED):  # another release may print a page by other means than its console
        raise SystemExit(f"no help book: Typer {typer.__version__} is not a release it was checked with ({', '.join(TESTED)})")
    book = build()
    if None in (book["typer"], book["rich"]):  # the runtime finds them the same way, and would never match
        raise SystemExit("no help book: the installed Typer or rich has no .dist-info folder of its own")
    with open(sys.argv[1], "w", encoding="utf-8") as file:
        helpbook.dump(book, file)
    print(f"help book: {len(book['pages'])} pages, Typer {book['typer']}", file=sys.stderr)


if __name__ == "__main__":
    main()
