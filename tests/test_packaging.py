"""What `pip install .` puts into site-packages: one package, with the converter and the registry inside."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_one_package_with_the_converter_and_the_registry(tmp_path):
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
    assert "dtg_cli/serve/page.html" in names  # dtg serve's page
    registry = zipfile.ZipFile(wheel).read("dtg_cli/models.toml")
    assert registry == (ROOT / "models.toml").read_bytes()
