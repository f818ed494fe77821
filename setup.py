"""The build steps pyproject.toml cannot declare: the registry (models.toml, at the repository root) is
copied into the built package, and the help book (`dtg_cli/helpbook.py`) is written into it."""

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# What could change what Typer builds for a page; the book is written without it. helpbook.py is standard
# library only at import, so it loads here without dtg's dependencies.
_LEFT_OUT = runpy.run_path(str(Path(__file__).parent / "dtg_cli" / "helpbook.py"))["BUILD_LEFT_OUT"]


class BuildWithRegistryAndHelp(build_py):
    def run(self):
        super().run()
        package = Path(self.build_lib) / "dtg_cli"
        package.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "models.toml", package / "models.toml")
        self.write_help_book(package / "helpbook.jsonl")

    def write_help_book(self, target: Path) -> None:
        """Have Typer build every page from the package as built; without Typer (or on any failure) there
        is no book, and Typer renders every page."""
        env = {name: value for name, value in os.environ.items() if not name.startswith(_LEFT_OUT)}
        env["PYTHONPATH"] = os.path.abspath(self.build_lib)
        done = subprocess.run(
            [sys.executable, "-m", "dtg_cli.cli.pages", str(target.resolve())], env=env, cwd=self.build_lib, capture_output=True, text=True
        )
        if done.returncode != 0:
            target.unlink(missing_ok=True)
            print(f"warning: no help book (Typer renders every page): {done.stderr.strip()[-500:]}", file=sys.stderr)


setup(cmdclass={"build_py": BuildWithRegistryAndHelp})
