"""Copies the registry (models.toml, at the repository root) into the built package; everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithRegistry(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "dtg_cli" / "models.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "models.toml", target)


setup(cmdclass={"build_py": BuildWithRegistry})
