"""The whole conversion: resolve the source, write F16, quantize, and publish each file atomically."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # a system without advisory locks
    fcntl = None

from dtg_cli.convert.hf_to_gguf import SourceInfo, read_license, write_gguf_f16
from dtg_cli.convert.quantize import quantize
from dtg_cli.errors import DtgError, UsageError
from dtg_cli.hub import download_checkpoint, looks_like_repo_id
from dtg_cli.quants import FILE_SUFFIXES, QUANTS, parse_quants

log = logging.getLogger("dtg")


class ConvertProgress:
    """Receives progress events; the CLI shows them on stderr. The default ignores them."""

    def step(self, description: str, total: int | None = None) -> None: ...

    def advance(self, done: int) -> None: ...


@contextlib.contextmanager
def atomic_path(final: Path, publish: bool = True) -> Iterator[Path]:
    """A temporary path beside `final`, renamed onto it if the block succeeds and `publish`; else removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if publish:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600
            os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise DtgError(f"cannot write to output directory {out_dir}: {e.strerror}") from e


def convert(
    src: str | Path,
    out_dir: str | Path,
    quants: str | Sequence[str] = QUANTS,
    *,
    name: str | None = None,
    revision: str | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: ConvertProgress | None = None,
) -> list[Path]:
    """Convert a checkpoint directory or hub repo id to `out_dir/NAME-{F16,Q8_0,Q6_K}.gguf`; return the paths."""
    progress = progress or ConvertProgress()
    quants = parse_quants(quants)
    out_dir = Path(out_dir)
    src_text = str(src)
    repo = None
    if Path(src_text).is_dir():
        directory = Path(src_text)
    elif looks_like_repo_id(src_text):
        repo = src_text
        progress.step(f"downloading {repo}")
        directory = download_checkpoint(repo, revision)
    else:
        raise DtgError(f"{src_text}: not a checkpoint directory nor a hub repo id (owner/name)")
    name = name or (repo.split("/")[-1] if repo else directory.resolve().name)
    if not _NAME.fullmatch(name) or name.startswith(".") or len(name) > 200:
        raise UsageError(
            f"invalid model name {name!r}: at most 200 characters, not starting with a dot, without / \\ * ? [ ] or "
            "control characters (--name gives another)"
        )

    targets = {q: out_dir / f"{name}-{FILE_SUFFIXES[q]}.gguf" for q in quants}
    existing = [q for q, p in targets.items() if p.exists()]
    if existing and not force:
        if len(existing) == len(targets):
            raise DtgError(f"{', '.join(str(targets[q]) for q in existing)} already exists; pass --force to overwrite")
        for q in existing:  # an interrupted run: finish what is missing
            log.warning("keeping %s, which exists (--force replaces it)", targets[q])
    _prepare_out_dir(out_dir)
    with _only_run(out_dir):
        _remove_scratch_files(out_dir, name)  # a killed run's: no other run is writing here
        return _convert(
            directory, out_dir, name, targets, [q for q in quants if force or q not in existing], repo, revision, threads, progress
        )


def _convert(directory, out_dir, name, targets, todo, repo, revision, threads, progress) -> list[Path]:
    """The conversion itself, with the output folder held (`_only_run`): the F16 file, then each quant of `todo`."""
    source = SourceInfo(name=name, repo=repo, revision=revision or _snapshot_revision(directory), license=read_license(directory))
    # The F16 file is the source of every quantization: written first, kept only if asked for.
    with contextlib.ExitStack() as stack:
        f16_final = targets.get("f16", out_dir / f"{name}-F16.gguf")
        f16_tmp = stack.enter_context(atomic_path(f16_final, publish="f16" in todo))
        label = f"writing {name}-F16.gguf"

        def on_tensor(_name: str, index: int, total: int) -> None:
            if index == 1:
                progress.step(label, total)
            progress.advance(index)

        write_gguf_f16(directory, f16_tmp, source, on_tensor)
        for q in todo:
            if q == "f16":
                continue
            progress.step(f"quantizing to {FILE_SUFFIXES[q]}")
            with atomic_path(targets[q]) as tmp:
                quantize(f16_tmp, tmp, q, threads)
    return list(targets.values())


# A model name: it is part of file names and of the pattern that finds a killed run's files.
_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f/\\*?\[\]]+")


@contextlib.contextmanager
def _only_run(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder while converting into it, or refuse at once: a second
    run would take the first's temporary files for a killed run's."""
    try:
        folder = os.open(out_dir, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DtgError(
                    f"another dtg convert is writing into {out_dir}; wait for it to end, or convert into another folder"
                ) from None
            except OSError:  # a file system without locks
                pass
        yield
    finally:
        os.close(folder)


def _remove_scratch_files(out_dir: Path, name: str) -> None:
    """The hidden `.NAME-*.gguf.*.partial` files a killed run left (a finished or interrupted run removes
    its own)."""
    for suffix in FILE_SUFFIXES.values():
        for stale in out_dir.glob(f".{glob.escape(name)}-{suffix}.gguf.*.partial"):
            stale.unlink(missing_ok=True)


def _snapshot_revision(directory: Path) -> str | None:
    """The commit of a hub cache snapshot directory (.../snapshots/<sha>), if that is what it is."""
    resolved = directory.resolve()
    if resolved.parent.name == "snapshots" and len(resolved.name) == 40:
        return resolved.name
    return None
