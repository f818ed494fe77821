"""Fill a Hugging Face hub cache the way huggingface_hub lays out its downloads."""

import hashlib
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(repo_id: str, files: dict[str, Path] | Path, commit: str = COMMIT, ref: str | None = "main") -> str:
    """Store `files` ({name in repo: local file}, or every file of a directory) as a download of `repo_id`
    at `commit`, with `ref` pointing at it. Always inside the test session's HF_HOME."""
    from huggingface_hub import constants

    repo_dir = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    assert "dtg-test-hf-home-" in str(repo_dir)  # never the user's own cache
    if isinstance(files, Path):
        files = {p.name: p for p in files.iterdir() if p.is_file()}
    snapshot = repo_dir / "snapshots" / commit
    for folder in (repo_dir / "blobs", snapshot, repo_dir / "refs"):
        folder.mkdir(parents=True, exist_ok=True)
    if ref:
        (repo_dir / "refs" / ref).write_text(commit)
    for name, path in files.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copy(path, repo_dir / "blobs" / digest)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"../../blobs/{digest}")
    return commit
