"""The one build step pyproject.toml cannot declare: the registry (models.toml, at the repository root) is
copied into the built package."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithRegistry(build_py):
    def run(self):
        super().run()
        package = Path(self.build_lib) / "dtg_cli"
        package.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "models.toml", package / "models.toml")


setup(cmdclass={"build_py": BuildWithRegistry})
