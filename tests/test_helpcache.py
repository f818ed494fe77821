"""`dtg_cli.helpcache`: a `--help` page rendered once is printed again, byte for byte, without Typer."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from dtg_cli import helpcache


def dtg(*args, env=None, importtime=False):
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "dtg_cli", *args]
    return subprocess.run(command, capture_output=True, env={**os.environ, **(env or {})})


def imported(done) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["models", "list", "--help"]])
def test_a_page_is_rendered_once_then_printed_as_it_was(args, dtg_home):
    first = dtg(*args, importtime=True)
    second = dtg(*args, importtime=True)
    assert first.returncode == second.returncode == 0
    assert "Usage: python -m dtg_cli" in first.stdout.decode() and second.stdout == first.stdout
    assert "typer" in imported(first) and "typer" not in imported(second) and "rich" not in imported(second)
    assert len(list((dtg_home / "help").iterdir())) == 1


def test_a_page_for_another_terminal_is_rendered_for_it(dtg_home, tmp_path):
    wide = dtg("generate", "--help", env={"COLUMNS": "120"})
    narrow = dtg("generate", "--help", env={"COLUMNS": "60"})
    narrow_again = dtg("generate", "--help", env={"COLUMNS": "60"})
    fresh = dtg("generate", "--help", env={"COLUMNS": "60", "DTG_HOME": str(tmp_path / "elsewhere")})
    assert wide.stdout != narrow.stdout
    assert narrow_again.stdout == narrow.stdout == fresh.stdout
    assert max(len(line) for line in narrow.stdout.decode().splitlines()) <= 60


def test_a_failed_command_keeps_nothing(dtg_home):
    done = dtg("nosuch", "--help")
    assert done.returncode != 0
    assert not (dtg_home / "help").exists()


def test_only_help_requests_have_a_page():
    assert helpcache.page_key(["generate", "--help"]) is not None
    for args in ([], ["--version"], ["generate", "1girl"], ["generate", "-m", "x.gguf", "--help"], ["--help", "generate"]):
        assert helpcache.page_key(args) is None, args


def test_the_key_changes_with_the_code(tmp_path):
    source = os.path.join(os.path.dirname(helpcache.__file__), "settings.py")
    before = os.stat(source)
    key = helpcache.page_key(["--help"])
    try:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        assert helpcache.page_key(["--help"]) != key
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert helpcache.page_key(["--help"]) == key


def test_a_page_stored_under_another_key_is_not_printed(dtg_home, capsys):
    key = helpcache.page_key(["--help"])
    path = helpcache._page_path(key)
    path.parent.mkdir(parents=True)
    path.write_text("another key\nanother page", encoding="utf-8")
    assert helpcache.serve(key) is False
    path.write_text(key + "\nthe page", encoding="utf-8")
    assert helpcache.serve(key) is True and capsys.readouterr().out == "the page"


def test_no_more_than_keep_pages(dtg_home, monkeypatch):
    import io

    monkeypatch.setattr(helpcache, "KEEP", 2)
    for key in ("a", "b", "c"):
        recorder = helpcache.Recorder(io.StringIO())
        recorder.write(f"page {key}")
        recorder.keep(key)
    assert len(list((dtg_home / "help").iterdir())) == 2


# Variables the installed rich and Typer read that cannot change a page, and why.
NOT_FOR_PAGES = {
    "PYDANTIC_DISABLE_PLUGINS": "set and restored by Typer around pydantic, which renders nothing",
    "XDG_CONFIG_HOME": "click's application folder",
    "COMP_WORDS": "shell completion (dtg installs none)",
    "COMP_CWORD": "shell completion",
}
_READS = re.compile(
    r"""(?:environ\.get|getenv|environ\[|environ\.pop)\(?\s*["']([A-Z_][A-Z0-9_]*)["']|["']([A-Z_][A-Z0-9_]*)["']\s+in\s+(?:os\.)?environ"""
)


def test_the_key_holds_every_variable_rich_and_typer_read():
    found = set()
    for package in ("rich", "typer"):
        folder = os.path.dirname(importlib.util.find_spec(package).origin)
        for root, _, files in os.walk(folder):
            for name in files:
                if name.endswith(".py") and name != "diagnose.py":  # rich.diagnose prints a report, not a page
                    text = open(os.path.join(root, name), encoding="utf-8").read()
                    found |= {a or b for a, b in _READS.findall(text)}
    assert {"TERM", "COLUMNS", "NO_COLOR", "TERMINAL_WIDTH"} <= found  # the scan sees what it looks for
    missing = sorted(name for name in found if not helpcache.in_key(name) and name not in NOT_FOR_PAGES)
    assert not missing


def test_a_new_terminal_session_keeps_its_pages(dtg_home):
    first = dtg("--help", env={"TERM_SESSION_ID": "w0t0p0:1", "ITERM_SESSION_ID": "a"})
    again = dtg("--help", env={"TERM_SESSION_ID": "w0t1p0:2", "ITERM_SESSION_ID": "b"}, importtime=True)
    assert first.returncode == again.returncode == 0 and again.stdout == first.stdout
    assert "typer" not in imported(again)
    other = dtg("--help", env={"UNICODE_VERSION": "9.0.0"}, importtime=True)  # rich's cell widths
    assert "typer" in imported(other)
