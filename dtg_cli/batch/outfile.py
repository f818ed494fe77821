"""The output file: its format, the checks made before a model loads, the lock held for the whole run,
what an interrupted run left (`--resume`), and the place each result line records."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # a system without advisory locks
    fcntl = None

from dtg_cli import jsontext
from dtg_cli.batch.tasks import RecordKey
from dtg_cli.errors import UsageError
from dtg_cli.output import LINE_KINDS, ResultWriter, check_kind
from dtg_cli.rendering import Style


def read_place(raw: bytes) -> tuple[dict, tuple[int, int]]:
    """A result line of a JSONL output and its place, (line, variant); raises ValueError for a line that is
    not such a record (its line a whole number from 1, its variant one from 0)."""
    record = jsontext.loads(raw)
    place = (record.get("line"), record.get("variant")) if isinstance(record, dict) else (None, None)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in place) or place[0] < 1 or place[1] < 0:
        raise ValueError("no line and variant")
    return record, place


@dataclass
class ResumePoint:
    results: int  # complete result lines in the output
    last: dict | None  # the last JSONL record, which the run checks against what it would write there
    model: str | None = None  # the model every JSONL record names


# The names of dtg's standard output: the CLI points descriptor 1 at stderr (native code writes there), so
# opened by name they would reach stderr instead of the results' stream.
STDOUT_NAMES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def is_stdout(path: str | None) -> bool:
    return path is None or path == "-" or os.path.abspath(path) in STDOUT_NAMES


def _is_device(path: str) -> bool:
    """A character device or a pipe (/dev/null, a FIFO): written as a stream, never truncated, locked or resumed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def output_format(path: str | None, given: str | None) -> str:
    """The output's format: as given (txt and json are taken for text and jsonl), else from the -o name
    (text on stdout and on a device)."""
    if given is not None:
        return check_kind({"txt": "text", "json": "jsonl"}.get(given, given), LINE_KINDS)
    if is_stdout(path) or _is_device(path):
        return "text"
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    raise UsageError(f"-o {path}: name it .jsonl or .txt, or give --format jsonl|text")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | None, *, resume: bool, force: bool, input_path: str | None = None) -> None:
    """Refuse an output that cannot be used, before any model is loaded or any file opened for writing.
    The output is never the input, by any name (a link, another path, or stdin redirected from it)."""
    if is_stdout(path):
        if resume:
            raise UsageError("--resume needs the output file: -o FILE")
        return
    if _is_device(path):
        if resume:
            raise UsageError(f"-o {path}: --resume needs a regular file, not a device or a pipe")
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"-o {target}: is a directory")
    if input_path is not None and target.exists():
        try:
            source = os.fstat(sys.stdin.fileno()) if input_path == "-" else os.stat(input_path)
            same = same_file(source, os.stat(target))
        except (OSError, ValueError, AttributeError):  # no stdin, or an input that is checked elsewhere
            same = False
        if same:
            what = "stdin comes from" if input_path == "-" else f"the input {input_path} is"
            raise UsageError(f"-o {target}: {what} the same file; write the results to another file")
    if target.exists() and not (resume or force):
        raise UsageError(f"{target} exists: --resume continues it, --force replaces it")
    if not target.parent.is_dir():
        raise UsageError(f"-o {target}: no such directory {target.parent}")


class Output:
    """Results, one line each, written and flushed as soon as they are done, so that an interrupted run
    leaves whole lines only. A file is replaced only with `force`, or continued with `resume`, and is held
    under an exclusive lock for the whole run: a second run on the same file stops at once."""

    def __init__(self, path: str | None, kind: str, *, style: Style = Style(), resume: bool = False, force: bool = False,
                 input_path: str | None = None):  # fmt: skip
        self.kind = kind
        self.style = style
        self.resume_point = ResumePoint(0, None)
        self._writer: ResultWriter | None = None
        check_output(path, resume=resume, force=force, input_path=input_path)
        self.path = None if is_stdout(path) else Path(path)
        if self.path is None:
            self._file = None
            return
        device = _is_device(path)
        try:
            self._file = open(self.path, "wb" if device else "ab")  # noqa: SIM115 - closed by close(); a file is truncated once locked
        except OSError as e:
            raise UsageError(f"-o {self.path}: cannot write it ({e.strerror})") from None
        if device:
            return
        try:
            _lock(self._file, self.path)
            if resume:
                self.resume_point = self._recover()
            else:
                self._file.truncate(0)
        except BaseException:
            self._file.close()
            raise

    def _recover(self) -> ResumePoint:
        """Cut a half-written last line (a crash mid-write) and find where the earlier run stopped. Every
        line must be one this command writes: UTF-8 text, and for JSONL a record of one model, in order."""
        results, end, last, model = 0, 0, None, None
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break
                results += 1
                end += len(raw)
                if self.kind == "jsonl":
                    last, model = self._resumable(raw, number, last, model)
                else:
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self._foreign(number, "not UTF-8 text") from None
        if end != self.path.stat().st_size:
            self._file.truncate(end)
        return ResumePoint(results, last, model)

    def _resumable(self, raw: bytes, number: int, last: dict | None, model: str | None) -> tuple[dict, str]:
        try:
            record, key = read_place(raw)
            name = str(record["model"])
        except (ValueError, KeyError, TypeError):
            raise self._foreign(number, "not a dtg batch record") from None
        if model is not None and name != model:
            raise self._foreign(number, f"a result of {name}, after results of {model}")
        if last is not None and key <= (last["line"], last["variant"]):
            raise self._foreign(number, f"line {key[0]} variant {key[1]} is out of order")
        return record, name

    def _foreign(self, number: int, why: str) -> UsageError:
        return UsageError(f"{self.path}:{number}: {why}; --resume continues only a file this command wrote (--force replaces it)")

    def write(self, result, key: RecordKey, variant: int) -> None:
        if self._writer is None:
            self._writer = ResultWriter(self.kind, self.style, self._file, str(self.path))
        self._writer.write(result, {"id": key.record_id, "record": key.index, "line": key.line, "variant": variant})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(f, path: Path) -> None:
    """Hold an exclusive lock on the output while the run lasts, or refuse at once."""
    if fcntl is None:  # no advisory locks on this system
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"-o {path}: another dtg batch run is writing it; wait for that run to end, or write to another file") from None
    except OSError:  # a file system without locks
        return
