"""`expand`: the whole job behind `dtg batch`: read prompt records lazily, generate them through the
batched engine, and write one result per line, in input order, flushed as each one is done.

Records come from .txt (one comma-separated prompt per line), .jsonl (one object per line) or .toml
(a `[defaults]` table and `[[prompt]]` tables). A record's settings are, from weakest to strongest: the
model family's defaults, the file's `[defaults]`, the caller's options, the record's own fields.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
try:
    import fcntl
except ImportError:  # a system without advisory locks
    fcntl = None

from dtg_cli.engine import Generator
from dtg_cli.errors import DtgError, UsageError
from dtg_cli.outcomes import Task
from dtg_cli.output import ResultWriter
from dtg_cli.rendering import Style
from dtg_cli.scheduler import END, NOT_READY, IterSource, QueuedSource, Source
from dtg_cli.settings import SAMPLING, SETTING, Request

INPUT_FORMATS = ("txt", "jsonl", "toml")
OUTPUT_FORMATS = ("text", "jsonl")
RECORD_FIELDS = frozenset({"id", *SETTING})  # every setting, and the record's id
DEFAULT_FIELDS = RECORD_FIELDS - {"id"}  # in [defaults], `seed` is the base seed
ASPECT_FIELDS = ("aspect_ratio", "width", "height")


class BatchInputError(DtgError):
    """A record that cannot be read or used, reported as FILE:LINE: what is wrong."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass
class Record:
    """One prompt of an input file, as written."""

    index: int  # position among the file's records, from 0 (what --shard splits on)
    line: int  # line number of the record (of its [[prompt]] header in TOML), from 1
    fields: dict


@dataclass
class BadRecord:
    """A record that cannot be read or used; it keeps its place in the output order."""

    index: int
    line: int
    where: str
    message: str


@dataclass
class Summary:
    """What a run did (this shard, this invocation)."""

    records: int = 0  # records finished (written or failed)
    results: int = 0
    tags: int = 0  # new tags in the written results
    errors: int = 0
    resumed: int = 0  # results found already written by an earlier run
    resumed_records: int = 0  # records an earlier run finished
    base_seed: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = f"{self.records / self.elapsed_s:.2f} records/s, {self.tags / self.elapsed_s:.0f} tags/s" if self.elapsed_s > 0 else ""
        parts = [f"{self.records} records, {self.results} results, {self.tags} new tags in {self.elapsed_s:.1f} s ({rate})"]
        if self.errors:
            parts.append(f"{self.errors} bad records skipped")
        if self.resumed:
            parts.append(f"{self.resumed} results already written")
        parts.append(f"base seed {self.base_seed}")
        return "; ".join(parts)


# --- reading ----------------------------------------------------------------------------------------


def derive_seed(base_seed: int, record_id: Any, variant: int) -> int:
    """The seed of one result of a record without its own seed: a hash of the base seed, the record's id
    (compared as text) and the variant, so it does not depend on where the record sits or what runs beside it."""
    digest = hashlib.blake2b(f"{base_seed}\0{record_id}\0{variant}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), with 0 <= K < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"--shard: {text!r} is not K/N (this machine's number K from 0, of N machines)")
    k, n = int(match[1]), int(match[2])
    if n < 1 or k >= n:
        raise UsageError(f"--shard: {text!r} needs 0 <= K < N (shards are numbered from 0)")
    return k, n


def _numbered_lines(stream: io.BufferedIOBase) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(stream, 1):
        yield number, raw.rstrip(b"\r\n")


def _meaningful(raw: bytes) -> bool:
    """Neither blank nor a # comment: the lines a text input holds prompts on, and what format sniffing reads."""
    text = raw.strip()
    return bool(text) and not text.startswith(b"#")


def sniff_format(path: str, given: str | None) -> str:
    """A file's input format (`input_format`), reading at most up to its first meaningful line."""
    first = None
    with open(path, "rb") as f:
        for raw in f:
            if _meaningful(raw):
                first = raw
                break
    return input_format(path, given, first)


def input_format(path: str, given: str | None, first_line: bytes | None) -> str:
    """The input's format: as given, else from the extension, else from its first line."""
    if given is not None:
        if given not in INPUT_FORMATS:
            raise UsageError(f"--input-format: {given!r} is not one of {', '.join(INPUT_FORMATS)}")
        return given
    suffix = Path(path).suffix.lower().lstrip(".") if path != "-" else ""
    if suffix in INPUT_FORMATS:
        return suffix
    if suffix == "json":
        return "jsonl"
    head = (first_line or b"").lstrip()
    if head.startswith(b"{"):
        return "jsonl"
    if head.startswith(b"["):
        return "toml"
    return "txt"


class InputFile:
    """An input file (or '-' for stdin) read lazily: `defaults` (a TOML file's [defaults]) and `records()`."""

    def __init__(self, path: str, kind: str | None = None):
        self.path = path
        self.name = "stdin" if path == "-" else path
        if path == "-":
            self._stream = sys.stdin.buffer
        else:
            try:
                self._stream = open(path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                raise UsageError(f"{path}: no such input file") from None
            except OSError as e:
                raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
        self._lines = _numbered_lines(self._stream)
        self._peeked: list[tuple[int, bytes]] = []
        first = self._peek_meaningful()
        self.kind = input_format(path, kind, first)
        self.defaults: dict = {}
        if self.kind == "toml":
            self._chunks = self._toml_chunks()
            self.defaults = self._toml_defaults()

    def close(self) -> None:
        if self.path != "-":
            self._stream.close()

    def _next_line(self) -> tuple[int, bytes] | None:
        if self._peeked:
            return self._peeked.pop(0)
        return next(self._lines, None)

    def _peek_meaningful(self) -> bytes | None:
        for number, raw in self._lines:
            self._peeked.append((number, raw))
            if _meaningful(raw):
                return raw
        return None

    def _where(self, line: int) -> str:
        return f"{self.name}:{line}"

    def records(self) -> Iterator[Record | BadRecord]:
        reader = {"txt": self._txt, "jsonl": self._jsonl, "toml": self._toml}[self.kind]
        return reader()

    def _txt(self) -> Iterator[Record | BadRecord]:
        index = 0
        while (item := self._next_line()) is not None:
            number, raw = item
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield BadRecord(index, number, self._where(number), "not UTF-8 text")
                index += 1
                continue
            if not _meaningful(raw):
                continue
            yield Record(index, number, {"tags": text})
            index += 1

    def _jsonl(self) -> Iterator[Record | BadRecord]:
        index = 0
        while (item := self._next_line()) is not None:
            number, raw = item
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except UnicodeDecodeError:
                yield BadRecord(index, number, self._where(number), "not UTF-8 text")
            except json.JSONDecodeError as e:
                yield BadRecord(index, number, self._where(number), f"not valid JSON: {e.msg} (column {e.colno})")
            else:
                if _holds_a_lone_surrogate(value):
                    yield BadRecord(
                        index, number, self._where(number), "a string holds a lone surrogate escape such as \\ud800, which is not text"
                    )
                elif isinstance(value, dict):
                    yield Record(index, number, value)
                else:
                    yield BadRecord(index, number, self._where(number), f"a record must be a JSON object, not {type(value).__name__}")
            index += 1

    # TOML cannot be parsed as a stream, but each [[prompt]] table can be parsed on its own: the file is
    # cut at those headers, so only one table is in memory at a time.
    _HEADER = re.compile(rb"^\s*\[\[\s*prompt\s*\]\]\s*(?:#.*)?$")

    def _toml_chunks(self) -> Iterator[tuple[int, list[bytes]]]:
        start, chunk = 1, []
        while (item := self._next_line()) is not None:
            number, raw = item
            if self._HEADER.match(raw):
                yield start, chunk
                start, chunk = number, []
            chunk.append(raw)
        yield start, chunk

    def _toml_parse(self, start: int, chunk: list[bytes]) -> dict:
        """Parse one piece; a syntax error names the line in the whole file."""
        try:
            return tomllib.loads(b"".join(line + b"\n" for line in chunk).decode("utf-8"))
        except UnicodeDecodeError:
            raise BatchInputError(self._where(start), "not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            text = str(e)
            at = re.search(r"\s*\(at line (\d+), column (\d+)\)", text)
            if at:
                line = start + int(at[1]) - 1
                raise BatchInputError(self._where(line), f"not valid TOML: {text[: at.start()]} (column {at[2]})") from None
            raise BatchInputError(self._where(start), f"not valid TOML: {text}") from None

    def _toml_defaults(self) -> dict:
        start, head = next(self._chunks)
        table = self._toml_parse(start, head)
        extra = set(table) - {"defaults"}
        if extra:
            line = start + next((i for i, raw in enumerate(head) if raw.strip() and not raw.strip().startswith(b"#")), 0)
            raise BatchInputError(
                self._where(line),
                f"unknown table or key {', '.join(sorted(extra))}: a batch file has a [defaults] table and [[prompt]] tables",
            )
        defaults = table.get("defaults", {})
        where = self._where(start + next((i for i, raw in enumerate(head) if raw.strip().startswith(b"[defaults")), 0))
        if not isinstance(defaults, dict):
            raise BatchInputError(where, "defaults must be a table: [defaults]")
        unknown = set(defaults) - DEFAULT_FIELDS
        if unknown:
            raise BatchInputError(where, f"[defaults]: {_unknown_fields(unknown, DEFAULT_FIELDS)}")
        try:
            # The same checks as a record's fields; a bad value is reported here, not on every record.
            build_task(Record(0, 0, {k: v for k, v in defaults.items() if k != "seed"}), {}, {}, 0)
        except UsageError as e:
            raise BatchInputError(where, f"[defaults] {e}") from None
        return defaults

    def _toml(self) -> Iterator[Record | BadRecord]:
        for index, (start, chunk) in enumerate(self._chunks):
            try:
                table = self._toml_parse(start, chunk)
            except BatchInputError as e:
                yield BadRecord(index, start, e.where, e.message)
                continue
            if set(table) != {"prompt"}:
                names = sorted(set(table) - {"prompt"})
                header = re.compile(rb"^\s*\[\[?\s*(" + b"|".join(re.escape(n.encode()) for n in names) + rb")\b")
                line = start + next((i for i, raw in enumerate(chunk) if header.match(raw)), 0)
                yield BadRecord(index, start, self._where(line), f"{', '.join(names)} after a [[prompt]] table: [defaults] must come first")
                continue
            yield Record(index, start, table["prompt"][0])


def _holds_a_lone_surrogate(value: Any) -> bool:
    """JSON can escape half of a UTF-16 pair ("\\ud800"); such a string cannot be written as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_holds_a_lone_surrogate(k) or _holds_a_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_a_lone_surrogate(v) for v in value)
    return False


def count_records(path: str, kind: str) -> int:
    """How many records a file holds, read quickly without parsing them (for a progress bar)."""
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            if kind == "toml":
                n += bool(InputFile._HEADER.match(raw.rstrip(b"\r\n")))
            elif kind == "txt":
                n += _meaningful(raw)
            else:
                n += bool(raw.strip())
    return n


def _unknown_fields(names: Iterable[str], known: Iterable[str]) -> str:

    parts = []
    for name in sorted(names):
        near = difflib.get_close_matches(str(name), sorted(known), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {near[0]}?)" if near else ""))
    return f"unknown field {', '.join(parts)}; known: {', '.join(sorted(known))}"


# --- building tasks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordKey:
    """What the engine hands back with each result of a record."""

    record_id: Any
    index: int  # the record's place in the input, from 0, bad records included (what --shard counts)
    line: int
    first_variant: int  # > 0 when a resumed run finishes a record whose first results were written


def _check_types(fields: dict) -> None:
    for name, value in fields.items():
        if name == "id":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise UsageError(f"id: {value!r} must be a non-empty string or an integer")
        else:
            SETTING[name].check_type(value)


def build_task(record: Record, options: dict, file_defaults: dict, base_seed: int) -> Task:
    """A record's request and seeds; raises UsageError for anything invalid."""
    fields = record.fields
    unknown = set(fields) - RECORD_FIELDS
    if unknown:
        raise UsageError(_unknown_fields(unknown, RECORD_FIELDS))
    _check_types(fields)
    own = {k: v for k, v in fields.items() if k not in ("id", "seed")}
    merged: dict = {}
    for layer in ({k: v for k, v in file_defaults.items() if k != "seed"}, options, own):
        given = {k: v for k, v in layer.items() if v is not None}
        if any(k in given for k in ASPECT_FIELDS):  # a stronger layer's image shape replaces a weaker one's
            for k in ASPECT_FIELDS:
                merged.pop(k, None)
        merged.update(given)
    sampling = {k: merged.pop(k) for k in SAMPLING if k in merged}
    tags = merged.pop("tags", "")
    num = merged.pop("num", 1)
    request = Request.from_options(tags, sampling=sampling, num=num, **merged)  # a SettingError names the fields
    record_id = fields.get("id", record.line)
    seed = fields.get("seed")
    if seed is not None:
        SETTING["seed"].check(seed)
        if seed + num > 2**32:
            raise UsageError(f"seed: {seed} with num {num} runs past the largest seed, 4294967295")
        seeds = tuple(seed + v for v in range(num))
    else:
        seeds = tuple(derive_seed(base_seed, record_id, v) for v in range(num))
    return Task(request, seeds, key=RecordKey(record_id, record.index, record.line, 0))


_RESUME_HINT = "--resume continues only a run of the same command on the same input (--force starts again)"


def _from_variant(task: Task, first: int) -> Task:
    """The task without its first `first` results (already written by an earlier run)."""
    request = replace(task.request, num=task.request.num - first)
    return Task(request, task.seeds[first:], key=replace(task.key, first_variant=first))


# --- writing ----------------------------------------------------------------------------------------


@dataclass
class ResumePoint:
    results: int  # complete result lines in the output
    last: dict | None  # the last JSONL record, which the run checks against what it would write there
    model: str | None = None  # the model every JSONL record names


def output_format(path: str | None, given: str | None) -> str:
    if given is not None:
        normal = {"txt": "text", "json": "jsonl"}.get(given, given)
        if normal not in OUTPUT_FORMATS:
            raise UsageError(f"--format: {given!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        return normal
    if path is None or path == "-":
        return "text"
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    raise UsageError(f"-o {path}: name it .jsonl or .txt, or give --format jsonl|text")


def check_input(path: str) -> None:
    """Refuse an input that cannot be read: files, pipes (`<(cmd)`) and devices are read; '-' is stdin."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path}: is a directory, not an input file")
    if not target.exists():
        raise UsageError(f"{path}: no such input file")


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | None, *, resume: bool, force: bool, input_path: str | None = None) -> None:
    """Refuse an output that cannot be used, before any model is loaded or any file opened for writing.
    The output is never the input, by any name (a link, another path, or stdin redirected from it)."""
    if path in (None, "-"):
        if resume:
            raise UsageError("--resume needs the output file: -o FILE")
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"-o {target}: is a directory")
    if input_path is not None and target.exists():
        try:
            source = os.fstat(sys.stdin.fileno()) if input_path == "-" else os.stat(input_path)
            same = _same_file(source, os.stat(target))
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
        self.path = None if path in (None, "-") else Path(path)
        if self.path is None:
            self._file = None
            return
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close(); truncated only once locked
        except OSError as e:
            raise UsageError(f"-o {self.path}: cannot write it ({e.strerror})") from None
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
            record = json.loads(raw)
            key = (int(record["line"]), int(record["variant"]))
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


# --- the run ----------------------------------------------------------------------------------------


class _Tasks(Source):
    """Records -> tasks for the engine, on the main thread: sharding, settings, resuming."""

    def __init__(self, records: Source, *, generator: Generator, options: dict, defaults: dict, base_seed: int,
                 shard: tuple[int, int], resume: ResumePoint, by_count: bool):  # fmt: skip
        self.records = records
        self.generator = generator
        self.options = options
        self.defaults = defaults
        self.base_seed = base_seed
        self.shard = shard
        self.resume = resume
        self.by_count = by_count  # text output: skip the first `resume.results` results
        self.to_skip = resume.results
        self.skipped = 0  # results
        self.skipped_records = 0
        self.resume_checked = False  # the output's last record was found in the input and matches it

    def get(self, block: bool):
        while True:
            item = self.records.get(block)
            if item is END:
                self._check_resumed_all()
            if item is END or item is NOT_READY:
                return item
            k, n = self.shard
            if item.index % n != k:
                continue
            task = item
            if isinstance(item, Record):
                try:
                    task = build_task(item, self.options, self.defaults, self.base_seed)
                except UsageError as e:
                    task = BadRecord(item.index, item.line, "", str(e))
            task = self._after_resume(item, task)
            if task is not None:
                return task

    def _after_resume(self, item, task):
        """What is left of a record after what an earlier run wrote (None: nothing)."""
        if self.by_count:
            if not self.to_skip:
                return task
            if isinstance(task, BadRecord):
                return None  # it wrote nothing there either (and was reported then)
            try:
                self.generator.prepare(task, note_unknown=False)
            except DtgError:
                return None
            done = min(task.request.num, self.to_skip)
            self.to_skip -= done
            return self._rest(task, done)
        last = self.resume.last
        if last is None or self.resume_checked:
            return task
        if item.line > last["line"]:
            raise UsageError(f"the output's last result is for line {last['line']}, which is not a record of the input; {_RESUME_HINT}")
        if isinstance(task, BadRecord):
            return None
        if item.line == last["line"]:
            self._check_resumed_record(task, last)
            self.resume_checked = True
        return self._rest(task, task.request.num if item.line < last["line"] else last["variant"] + 1)

    def _check_resumed_record(self, task: Task, last: dict) -> None:
        """The output's last record must be what this run writes for that record: same seed, conditions and
        sampling settings (the model is checked before the run)."""
        variant = last["variant"]
        prepared = self.generator.prepare(task, note_unknown=False)
        mine = {
            "seed": task.seeds[variant] if variant < len(task.seeds) else None,
            "conditions": json.loads(json.dumps(prepared.conditions)),
            "sampling": {k: v for k, v in json.loads(json.dumps(asdict(prepared.sampling))).items() if k != "seed"},
        }
        for name, value in mine.items():
            if name in last and last[name] != value:
                raise UsageError(
                    f"the output's result for line {last['line']} has {name} {json.dumps(last[name])}, this run gives "
                    f"{json.dumps(value)}; {_RESUME_HINT}"
                )

    def _check_resumed_all(self) -> None:
        if self.by_count and self.to_skip:
            raise UsageError(f"the output has {self.resume.results} results, more than this run makes for the input; {_RESUME_HINT}")
        if not self.by_count and self.resume.last is not None and not self.resume_checked:
            raise UsageError(
                f"the output's last result is for line {self.resume.last['line']}, which is not a record of the input; {_RESUME_HINT}"
            )

    def _rest(self, task: Task, done: int):
        done = min(done, task.request.num)
        self.skipped += done
        if done < task.request.num:
            return _from_variant(task, done)
        self.skipped_records += 1
        return None


def expand(
    generator: Generator,
    input_path: str,
    output_path: str | None = None,
    *,
    options: dict | None = None,
    base_seed: int | None = None,
    parallel: int | None = None,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    force: bool = False,
    skip_errors: bool = False,
    input_kind: str | None = None,
    output_kind: str | None = None,
    style: Style = Style(),
    on_error: Callable[[str], None] | None = None,
    on_progress: Callable[[Summary], None] | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Generate every record of `input_path` ('-': stdin) into `output_path` (None: stdout).

    `options` are the caller's settings (Request.from_options keywords; None values are ignored). A bad
    record raises BatchInputError after everything before it is written, unless `skip_errors`, which
    hands its 'FILE:LINE: message' to `on_error` and goes on. `summary`, if given, is kept up to date,
    so that a caller still has it when the run is interrupted.
    """
    started = time.perf_counter()
    kind = output_format(output_path, output_kind)
    source = InputFile(input_path, input_kind)
    try:
        seed = base_seed if base_seed is not None else source.defaults.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise BatchInputError(source.name, f"[defaults] seed: {seed!r} must be an integer between 0 and 2**32 - 1")
        summary = summary or Summary()
        summary.base_seed = seed
        with Output(output_path, kind, style=style, resume=resume, force=force, input_path=input_path) as out:
            if out.resume_point.model not in (None, generator.name):
                raise UsageError(f"{output_path} holds results of {out.resume_point.model}, not {generator.name}; {_RESUME_HINT}")
            records = QueuedSource(source.records()) if input_path == "-" else IterSource(source.records())
            tasks = _Tasks(records, generator=generator, options=options or {}, defaults=source.defaults, base_seed=seed,
                           shard=shard, resume=out.resume_point, by_count=kind == "text")  # fmt: skip
            for outcome in generator.run(tasks, parallel=parallel):
                summary.resumed, summary.resumed_records = tasks.skipped, tasks.skipped_records
                item = outcome.item
                if isinstance(item, BadRecord) or outcome.error is not None:
                    where = item.where if isinstance(item, BadRecord) and item.where else f"{source.name}:{_line_of(item)}"
                    message = item.message if isinstance(item, BadRecord) else str(outcome.error)
                    if not skip_errors:
                        summary.elapsed_s = time.perf_counter() - started
                        raise BatchInputError(where, message)
                    summary.records += 1
                    summary.errors += 1
                    if on_error:
                        on_error(f"{where}: {message}")
                else:
                    key: RecordKey = item.key
                    out.write(outcome.result, key, key.first_variant + outcome.variant)
                    summary.results += 1
                    summary.tags += len(outcome.result.new_tags)
                    if outcome.variant == item.request.num - 1:
                        summary.records += 1
                summary.elapsed_s = time.perf_counter() - started
                if on_progress:
                    on_progress(summary)
            summary.resumed, summary.resumed_records = tasks.skipped, tasks.skipped_records
    finally:
        source.close()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _line_of(item) -> int:
    return item.line if isinstance(item, BadRecord) else item.key.line


# --- merging shards ---------------------------------------------------------------------------------


def merge(paths: list[str], *, allow_gaps: bool = False) -> Iterator[tuple[dict, bytes]]:
    """The records of several JSONL outputs (one per shard) in input order, read as streams: each file is
    already in order, so this is a k-way merge on (line, variant). The files are read twice: first to
    check them, so that nothing is written when a result is in two files or a record (by the records'
    `record` numbers) in none, unless `allow_gaps`."""
    _check_merge(_merged(paths), allow_gaps)
    for _, _, _, record, raw in _merged(paths):
        yield record, raw


def _merged(paths: list[str]) -> Iterator[tuple[tuple[int, int], str, int, dict, bytes]]:

    def read(path: str) -> Iterator[tuple[tuple[int, int], str, int, dict, bytes]]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory, not a batch output") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
        with f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    key = (int(record["line"]), int(record["variant"]))
                except (ValueError, KeyError, TypeError):
                    raise BatchInputError(f"{path}:{number}", "not a dtg batch JSONL record (with line and variant)") from None
                yield key, path, number, record, raw if raw.endswith(b"\n") else raw + b"\n"

    return heapq.merge(*(read(p) for p in paths), key=lambda r: r[0])


def _check_merge(merged: Iterator, allow_gaps: bool) -> None:
    previous = None  # (key, path, record number or None) of the record before
    for key, path, number, record, _ in merged:
        index = record.get("record") if isinstance(record.get("record"), int) else None
        if previous is not None and key == previous[0]:
            raise BatchInputError(
                f"{path}:{number}", f"line {key[0]} variant {key[1]} is also in {previous[1]}: the files overlap (the same shard twice?)"
            )
        if not allow_gaps and index is not None:
            if previous is None:
                follows = (index, key[1]) == (0, 0)
            else:
                before = (previous[2], previous[0][1])
                follows = previous[2] is None or (index, key[1]) in ((before[0], before[1] + 1), (before[0] + 1, 0))
            if not follows:
                missing = 0 if previous is None or previous[2] is None else previous[2] + 1
                raise BatchInputError(
                    f"{path}:{number}",
                    f"record {missing} (counted from 0) is in none of the files: a shard that did not finish, or a "
                    "record skipped as bad (--allow-gaps merges anyway)",
                )
        previous = (key, path, index)
