"""Where dtg keeps its own files (converted models, rendered help): `$DTG_HOME`, by default dtg's folder
in the platform's user cache directory. Standard library only: `dtg --help` reads its cache through it."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def dtg_home() -> Path:
    """`$DTG_HOME`, or dtg's folder in the platform's user cache directory."""
    if os.environ.get("DTG_HOME"):
        return Path(os.environ["DTG_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "dtg" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dtg"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dtg"
