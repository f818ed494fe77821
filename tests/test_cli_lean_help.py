"""`dtg_cli.cli.lean_help`: help pages render without rich's Markdown and traceback modules, and exactly
as they render with them."""

import os
import subprocess
import sys

import pytest

# Renders the page `dtg ARGS` asks for as `dtg` would; with "full" first, Typer's renderer is imported
# beforehand with every module it names, as it is without lean_help. Reports on stderr which of the
# deferred modules the process imported.
RENDER = """
import atexit, sys
if sys.argv[1] == "full":
    import typer.rich_utils
atexit.register(lambda: print(sorted(m for m in ("rich.markdown", "rich.traceback") if m in sys.modules), file=sys.stderr))
sys.argv = ["dtg", *sys.argv[2:]]
from dtg_cli.__main__ import main
main()
"""

PAGES = [
    ["--help"],
    ["generate", "--help"],
    ["batch", "--help"],
    ["convert", "--help"],
    ["models", "info", "--help"],
    ["tags", "check", "--help"],
]


def render(mode: str, args: list[str], home, color: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "DTG_HOME": str(home), "COLUMNS": "100", **({"FORCE_COLOR": "1", "TERM": "xterm-256color"} if color else {})}
    return subprocess.run([sys.executable, "-c", RENDER, mode, *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("color", [False, True], ids=["plain", "color"])
@pytest.mark.parametrize("args", PAGES, ids=lambda args: " ".join(args))
def test_a_page_renders_as_with_the_modules_it_does_not_use(args, color, tmp_path):
    lean = render("lean", args, tmp_path / "lean", color)
    full = render("full", args, tmp_path / "full", color)
    assert lean.returncode == full.returncode == 0, lean.stderr + full.stderr
    assert "Usage" in lean.stdout and lean.stdout == full.stdout
    assert ("\x1b[" in lean.stdout) == color
    assert lean.stderr.strip() == "[]"
    assert full.stderr.strip() == "['rich.markdown', 'rich.traceback']"


def test_the_stand_ins_are_the_real_classes_when_used():
    script = """
import sys
from dtg_cli.cli import lean_help
lean_help.import_renderer()
from typer import rich_utils
assert "rich.markdown" not in sys.modules and "rich.traceback" not in sys.modules
text = rich_utils._make_rich_text(text="**bold**", markup_mode="markdown")
import rich.markdown
assert type(text) is rich.markdown.Markdown, type(text)
assert sys.modules["rich.markdown"] is rich.markdown and rich.markdown.Markdown is not rich_utils.Markdown
try:
    1 / 0
except ZeroDivisionError as e:
    import rich.traceback
    assert type(rich_utils.Traceback.from_exception(type(e), e, e.__traceback__)) is rich.traceback.Traceback
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout == "ok\n", done.stderr


def test_other_typer_releases_import_the_renderer_as_it_is():
    script = """
import sys, typer
typer.__version__ = "0.30.0"
from dtg_cli.cli import lean_help
lean_help.import_renderer()
assert "typer.rich_utils" not in sys.modules
import typer.rich_utils
assert "rich.markdown" in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout == "ok\n", done.stderr
