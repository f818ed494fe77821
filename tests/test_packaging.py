"""What `pip install .` puts into site-packages: one package, with the converter, the registry and the help
book inside."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import typer

from dtg_cli import helpbook
from dtg_cli.cli.coercion import TESTED

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_one_package_with_the_converter_the_registry_and_the_help_book(tmp_path):
    # Built from a copy without build/: setuptools would otherwise reuse what an earlier build left there.
    source = shutil.copytree(
        ROOT, tmp_path / "source", ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*cache")
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("dtg_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"dtg_cli"}
    sources = {f"dtg_cli/{p.relative_to(ROOT / 'dtg_cli').as_posix()}" for p in (ROOT / "dtg_cli").rglob("*.py")}
    sources |= {f"dtg_cli/convert/{p.name}" for p in (ROOT / "convert").glob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))  # every module, subpackages included
    registry = zipfile.ZipFile(wheel).read("dtg_cli/models.toml")
    assert registry == (ROOT / "models.toml").read_bytes()
    if not typer.__version__.startswith(TESTED):  # the help book is written only with a Typer release it was checked with
        assert "dtg_cli/helpbook.jsonl" not in names
        return
    (tmp_path / "helpbook.jsonl").write_bytes(zipfile.ZipFile(wheel).read("dtg_cli/helpbook.jsonl"))  # written by Typer at build
    book = helpbook.load(str(tmp_path / "helpbook.jsonl"))
    assert book["typer"] == typer.__version__
    assert {"", "generate", "batch", "merge", "convert", "models", "models list", "tags", "tags check"} <= set(book["pages"])
