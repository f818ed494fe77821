"""The help book (`dtg_cli.helpbook`, written by `dtg_cli.cli.pages`): every page prints from it byte for
byte as Typer prints it, without Typer, and only where Typer would print the same."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from dtg_cli import helpbook
from dtg_cli.cli import pages
from dtg_cli.cli.coercion import TESTED

checked = pytest.mark.skipif(
    not typer.__version__.startswith(TESTED), reason=f"Typer {typer.__version__} is not a release the help book is written with ({TESTED})"
)

ROOT = Path(__file__).resolve().parent.parent

# `dtg WORDS --help` as the `dtg` script runs it: `book` reads the page from BOOK, `typer` has no book.
# Reports on stderr whether Typer was imported.
RENDER = """
import atexit, sys
mode, book, *words = sys.argv[1:]
atexit.register(lambda: print("typer" in sys.modules, file=sys.stderr))
from dtg_cli import helpbook
helpbook.BOOK = book if mode == "book" else book + ".none"
sys.argv = ["dtg", *words, "--help"]
from dtg_cli.__main__ import main
main()
"""

# Terminals: not one (plain); and rich's terminal switch (TTY_COMPATIBLE) with 256 colours, true colour,
# and colours off, at widths from narrow to wide.
TERMINALS = {
    "plain-100": {"COLUMNS": "100"},
    "256-colours-61": {"COLUMNS": "61", "TTY_COMPATIBLE": "1", "TERM": "xterm-256color"},
    "truecolor-200": {"COLUMNS": "200", "TTY_COMPATIBLE": "1", "TERM": "xterm-256color", "COLORTERM": "truecolor"},
    "no-color-45": {"COLUMNS": "45", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"},
}


def clean_environment(**extra: str) -> dict:
    """This process's environment without what setup.py leaves out when it writes the book, and without
    the terminal's own variables (each test sets those it means)."""
    left_out = (*helpbook.BUILD_LEFT_OUT, "TTY_", "TERM", "COLORTERM", "NO_COLOR")
    return {**{name: value for name, value in os.environ.items() if not name.startswith(left_out)}, **extra}


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """The book of this checkout, written as setup.py writes it."""
    path = tmp_path_factory.mktemp("book") / "helpbook.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "dtg_cli.cli.pages", str(path)], capture_output=True, text=True, env=clean_environment(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return path


def render(mode: str, book: Path, words: list[str], home: Path, terminal: dict) -> subprocess.CompletedProcess:
    env = clean_environment(DTG_HOME=str(home), **terminal)
    return subprocess.run([sys.executable, "-c", RENDER, mode, str(book), *words], capture_output=True, text=True, env=env, cwd=ROOT)


def test_no_book_is_written_with_another_typer_release(tmp_path):
    script = "import sys, typer; typer.__version__ = '0.99.0'; from dtg_cli.cli import pages; pages.main()"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "book.jsonl")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "no help book: Typer 0.99.0" in done.stderr
    assert not (tmp_path / "book.jsonl").exists()


@checked
def test_the_book_holds_every_page_of_dtg(book):
    written = helpbook.load(str(book))
    words = {" ".join(found) for found in pages._command_words(typer.main.get_command(pages.app), [])}
    assert {"", "generate", "batch", "models list", "tags check"} <= words
    assert set(written["pages"]) == words
    assert written["typer"] == typer.__version__ and written["program"] == "dtg"
    assert written["rich"] == importlib.metadata.version("rich")


@checked
@pytest.mark.parametrize("terminal", TERMINALS, ids=list(TERMINALS))
def test_every_page_prints_as_typer_prints_it(book, terminal, tmp_path):
    for words in [found.split() for found in helpbook.load(str(book))["pages"]]:
        printed = {mode: render(mode, book, words, tmp_path / mode / "-".join(words), TERMINALS[terminal]) for mode in ("book", "typer")}
        assert printed["book"].returncode == printed["typer"].returncode == 0, printed["book"].stderr + printed["typer"].stderr
        assert printed["book"].stdout == printed["typer"].stdout, words
        assert "Usage: dtg" in re.sub(r"\x1b\[[0-9;]*m", "", printed["book"].stdout)
        assert ("\x1b[" in printed["book"].stdout) == ("TTY_COMPATIBLE" in TERMINALS[terminal])
        assert printed["book"].stderr.strip() == "False" and printed["typer"].stderr.strip() == "True"


@checked
def test_a_page_prints_as_typer_prints_it_in_a_real_terminal(book, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    def in_terminal(mode: str) -> bytes:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 93, 0, 0))
        env = clean_environment(DTG_HOME=str(tmp_path / mode), TERM="xterm-256color")
        process = subprocess.Popen(
            [sys.executable, "-c", RENDER, mode, str(book), "generate"], stdout=follower, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        assert process.wait(timeout=60) == 0
        assert process.stderr.read().decode().strip() == str(mode == "typer")
        return output

    page = in_terminal("book")
    assert page == in_terminal("typer")
    assert b"\x1b[" in page and b"Usage: " in page


@checked
def test_a_page_from_the_book_is_kept_for_the_next_request(book, tmp_path):
    terminal = TERMINALS["plain-100"]
    first = render("book", book, ["batch"], tmp_path, terminal)
    assert first.returncode == 0 and first.stderr.strip() == "False"
    moved = book.rename(book.with_suffix(".moved"))  # the book is gone: the kept page is what prints
    try:
        again = render("book", book, ["batch"], tmp_path, terminal)
    finally:
        moved.rename(book)
    assert again.stdout == first.stdout and again.stderr.strip() == "False"


@checked
class TestWhereTheBookStandsForTyper:
    """In this process: `render` gives a page only where Typer would print the same."""

    @pytest.fixture(autouse=True)
    def as_the_dtg_script(self, monkeypatch, book):
        for name in list(os.environ):
            if name not in clean_environment():
                monkeypatch.delenv(name)
        monkeypatch.setattr(sys, "argv", ["/usr/local/bin/dtg", "--help"])
        monkeypatch.setattr(sys.modules["__main__"], "__package__", None, raising=False)
        self.book = book

    def test_the_book_prints_a_page(self):
        assert "\n Usage: dtg [OPTIONS] COMMAND [ARGS]..." in helpbook.render([], str(self.book))
        assert "tags check" in helpbook.load(str(self.book))["pages"]
        assert "Usage: dtg tags check" in helpbook.render(["tags", "check"], str(self.book))

    @pytest.mark.parametrize(
        "name", ["FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERMINAL_WIDTH", "TYPER_USE_RICH", "_TYPER_FORCE_DISABLE_TERMINAL"]
    )
    def test_not_with_a_variable_typer_reads(self, name, monkeypatch):
        monkeypatch.setenv(name, "1")
        assert helpbook.render([], str(self.book)) is None

    def test_not_as_python_dash_m(self, monkeypatch):
        monkeypatch.setattr(sys.modules["__main__"], "__package__", "dtg_cli", raising=False)
        assert helpbook.render([], str(self.book)) is None

    def test_not_under_another_name(self, monkeypatch):
        monkeypatch.setattr(sys, "argv", ["/usr/local/bin/dtg2", "--help"])
        assert helpbook.render([], str(self.book)) is None

    def test_not_where_gettext_would_translate_typers_words(self, monkeypatch):
        import gettext

        monkeypatch.setattr(gettext, "find", lambda domain, *args, **kwargs: "/usr/share/locale/de/LC_MESSAGES/messages.mo")
        assert helpbook.render([], str(self.book)) is None

    @pytest.mark.parametrize("package", ["typer", "rich"])
    def test_not_with_another_typer_or_rich_release(self, package, tmp_path):
        written = helpbook.load(str(self.book))
        other = tmp_path / "other.jsonl"
        with open(other, "w", encoding="utf-8") as file:
            helpbook.dump({**written, package: "0.1.0"}, file)
        assert helpbook.render([], str(other)) is None

    def test_not_for_words_that_are_not_a_page(self):
        assert helpbook.render(["generate", "-m", "x"], str(self.book)) is None
        assert helpbook.render(["nothing"], str(self.book)) is None

    @pytest.mark.parametrize("damage", ["missing", "not json", "unknown kind", "pages out of step"])
    def test_not_from_a_missing_or_damaged_book(self, damage, tmp_path, capsys):
        damaged = tmp_path / "damaged.jsonl"
        written = helpbook.load(str(self.book))
        lines = self.book.read_text(encoding="utf-8").split("\n")
        if damage == "not json":  # the first line, or the page's own
            damaged.write_text("\n".join([lines[0][:-10], *lines[1:]]), encoding="utf-8")
            assert helpbook.render([], str(damaged)) is None
            damaged.write_text("\n".join([lines[0], lines[1][:-10], *lines[2:]]), encoding="utf-8")
        elif damage == "unknown kind":
            written["pages"][""][1][0]["kind"] = "Markdown"
            with open(damaged, "w", encoding="utf-8") as file:
                helpbook.dump(written, file)
        elif damage == "pages out of step":  # a line lost: the page of "" would be the next one
            damaged.write_text("\n".join([lines[0], *lines[2:]]), encoding="utf-8")
        assert helpbook.render([], str(damaged)) is None
        assert capsys.readouterr().out == ""


@checked
def test_a_page_that_depends_on_the_terminal_is_left_to_typer():
    """click wraps a usage line longer than its terminal; such a page is not in the book."""
    app = typer.Typer(add_completion=False)

    @app.command()
    def short(name: str) -> None:
        """A short usage line."""

    @app.command(name="a-command-with-a-long-name-and-many-arguments")
    def long(first_argument: str, second_argument: str, third_argument: str) -> None:
        """A usage line wider than a 50-column terminal."""

    written = pages.build(app)
    assert "short" in written["pages"]
    assert "a-command-with-a-long-name-and-many-arguments" not in written["pages"]
