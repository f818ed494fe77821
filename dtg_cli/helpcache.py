"""Rendered `--help` pages, kept so that the next identical request prints without loading Typer or rich.

Importing rich (and Typer, where the help book cannot stand in for it) and rendering a page take several
times Python's own start. A page is a function of dtg's code, the installed Typer and rich, the program's
name, the words asked about, and the terminal: whether each standard stream is a terminal and its size,
the variables rich and Typer read from the environment, and the output encoding. `page_key` writes all
of these down. The first request renders (from `helpbook`, else with Typer while `Recorder` keeps what
reaches stdout); the page is stored, after its key, under `$DTG_HOME/help/` (`keep`), from Typer only
when the command exits 0. A later request whose key is the stored one, character for character, prints
the stored page (`serve`). Any change to any input is another key, so a page is
never shown where it would have rendered differently; the newest `KEEP` pages are kept.

Standard library only: `__main__` asks here before the CLI is imported.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import zlib
from pathlib import Path

from dtg_cli.home import dtg_home

KEEP = 32
_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")
# The environment variables rich, Typer (with its click) and Python's stream set-up read, from their sources;
# `tests/test_helpcache.py` reads the installed rich and Typer again and fails on a variable missing here.
# One too few would show a page rendered for another terminal; one too many costs a render: a terminal's
# session id (TERM_SESSION_ID, ITERM_SESSION_ID), new in every window, would cost one in each.
_VARIABLES = frozenset(
    {
        "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES",
        "JUPYTER_COLUMNS", "JUPYTER_LINES", "DATABRICKS_RUNTIME_VERSION", "UNICODE_VERSION", "TERMINAL_WIDTH", "GITHUB_ACTIONS",
        "LANG", "LANGUAGE",  # with LC_*: the locale, and gettext's choice of language for Typer's words
    }
)  # fmt: skip
_PREFIXES = ("TYPER_", "_TYPER_", "PYTHON", "LC_", "DTG_")


def in_key(name: str) -> bool:
    """Whether an environment variable is part of a page's key."""
    return name in _VARIABLES or name.startswith(_PREFIXES)


def _code_files() -> list[tuple[str, int, int]]:
    """(path, mtime, size) of each source file of dtg (and, in a checkout, of ../convert) and of the
    packages that render the page."""
    import dtg_cli

    folders = [os.path.dirname(dtg_cli.__file__)] + [os.path.join(extra, "convert") for extra in dtg_cli.__path__[1:]]
    stamps = []
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir() and entry.name != "__pycache__":
                    folders.append(entry.path)
                elif entry.name.endswith((".py", ".toml")):
                    stat = entry.stat()
                    stamps.append((entry.path, stat.st_mtime_ns, stat.st_size))
    for name in ("typer", "rich", "click"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            stat = os.stat(spec.origin)
            stamps.append((spec.origin, stat.st_mtime_ns, stat.st_size))
    return sorted(stamps)


def _terminal() -> list[object]:
    """What rich and click see of the terminal: each standard stream's tty-ness and size, stdout's
    encoding, and the environment variables they read."""
    streams = []
    for fd in (0, 1, 2):
        try:
            streams.append((os.isatty(fd), tuple(os.get_terminal_size(fd))))
        except OSError:
            streams.append((False, None))
    environment = sorted((name, value) for name, value in os.environ.items() if in_key(name))
    return [streams, sys.stdout.encoding, sys.stdout.errors, environment, sys.platform]


def page_key(args: list[str]) -> str | None:
    """The key of the page `dtg ARGS` prints, when ARGS ask for one (`[COMMAND...] --help`), else None:
    one line that names everything the page depends on."""
    if not args or args[-1] != "--help" or len(args) > 4 or not all(_COMMAND_WORD.fullmatch(word) for word in args[:-1]):
        return None
    if sys.stdout is None or sys.platform == "win32":  # a Windows console's features are not in the environment
        return None
    try:
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # click names `python -m dtg_cli` so
        program = [sys.argv[0], main_spec.name if main_spec else None]
        return repr([sys.version, program, args, _terminal(), _code_files()])
    except OSError:
        return None


def _page_path(key: str) -> Path:
    data = key.encode("utf-8", "surrogateescape")
    return dtg_home() / "help" / f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def serve(key: str | None) -> bool:
    """Print the stored page for `key`; False when there is none (render it then)."""
    if key is None:
        return False
    path = _page_path(key)
    try:
        stored_key, page = path.read_text(encoding="utf-8", errors="surrogateescape").split("\n", 1)
    except (OSError, ValueError):
        return False
    if stored_key != key:  # another key with the same file name
        return False
    try:
        os.utime(path)  # a page in use is among the newest, which `keep` keeps
    except OSError:
        pass
    show(page)
    return True


def show(page: str) -> None:
    """Print a page."""
    try:
        sys.stdout.write(page)
        sys.stdout.flush()
    except BrokenPipeError:  # `dtg --help | head -1`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit


def keep(key: str, page: str) -> None:
    """Store `page` for `key`, after the key, and drop all but the newest `KEEP` pages."""
    path = _page_path(key)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}"
        partial.write_text(key + "\n" + page, encoding="utf-8", errors="surrogateescape")
        os.replace(partial, path)
        pages = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in pages[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:  # a read-only cache: the page renders every time
        pass


class Recorder:
    """Stands in for stdout while a page renders: writes through and keeps the text. It has no `buffer`,
    so click and rich can only write through `write`, and nothing reaches the terminal unrecorded."""

    def __init__(self, stream):
        self._stream = stream
        self._parts: list[str] = []
        self.encoding = stream.encoding
        self.errors = stream.errors

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as a text stream answers; click probes with b""
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._parts.append(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    def keep(self, key: str) -> None:
        """Store what was written as the page for `key`."""
        keep(key, "".join(self._parts))
