"""What `pip install .` puts into site-packages: one package, with the converter and the registry inside."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_one_package_with_the_converter_and_the_registry(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("dtg_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"dtg_cli"}
    assert "dtg_cli/convert/__init__.py" in names and "dtg_cli/convert/vocab.py" in names
    registry = zipfile.ZipFile(wheel).read("dtg_cli/models.toml")
    assert registry == (ROOT / "models.toml").read_bytes()
