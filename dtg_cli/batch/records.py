"""Records in: an input file (.txt, .jsonl, .toml, or stdin) read lazily, its format sniffed, each record
with its place in the file. Nothing here knows what a record's fields mean (`tasks.py`)."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

from dtg_cli import jsontext
from dtg_cli.errors import DtgError, UsageError

INPUT_FORMATS = ("txt", "jsonl", "toml")


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


def check_input(path: str) -> None:
    """Refuse an input that cannot be read: files, pipes (`<(cmd)`) and devices are read; '-' is stdin."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path}: is a directory, not an input file")
    if not target.exists():
        raise UsageError(f"{path}: no such input file")


def _numbered_lines(stream: io.BufferedIOBase) -> Iterator[tuple[int, bytes]]:
    """The lines of a file without their line ends, from 1; a UTF-8 byte order mark before the first (as
    some Windows editors write) is dropped, so that it changes neither the format sniffed nor the record."""
    for number, raw in enumerate(stream, 1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        yield number, raw.rstrip(b"\r\n")


def _multiline_string(line: bytes, quote: bytes | None) -> bytes | None:
    """Which TOML multi-line string (b'\"\"\"' or b"'''") is still open at the end of `line`, given the
    one open at its start (None: none). One-line strings and comments are skipped over."""
    i = 0
    while i < len(line):
        if quote is not None:
            if quote == b'"""' and line[i : i + 1] == b"\\":
                i += 2
            elif line.startswith(quote, i):
                i += 3
                while line[i : i + 1] == quote[:1]:  # a string may end with one or two quotes of its own
                    i += 1
                quote = None
            else:
                i += 1
            continue
        char = line[i : i + 1]
        if char == b"#":
            break
        if line.startswith(b'"""', i) or line.startswith(b"'''", i):
            quote, i = line[i : i + 3], i + 3
        elif char in (b'"', b"'"):
            i += 1
            while i < len(line) and line[i : i + 1] != char:
                i += 2 if char == b'"' and line[i : i + 1] == b"\\" else 1
            i += 1
        else:
            i += 1
    return quote


def _meaningful(raw: bytes) -> bool:
    """Neither blank nor a # comment: the lines a text input holds prompts on, and what format sniffing reads."""
    text = raw.strip()
    return bool(text) and not text.startswith(b"#")


def sniff_format(path: str, given: str | None) -> str:
    """A file's input format (`input_format`), reading at most up to its first meaningful line."""
    first = None
    with open(path, "rb") as f:
        for _, raw in _numbered_lines(f):
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
        check_input(path)
        if path == "-":
            self._stream = sys.stdin.buffer
        else:
            try:
                self._stream = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as e:
                raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
        self._lines = _numbered_lines(self._stream)
        self._peeked: list[tuple[int, bytes]] = []
        first = self._peek_meaningful()
        self.kind = input_format(path, kind, first)
        self.defaults: dict = {}
        self.defaults_where = self.name
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
                value = jsontext.loads(raw)
            except UnicodeDecodeError:
                yield BadRecord(index, number, self._where(number), "not UTF-8 text")
            except jsontext.BadJSON as e:
                yield BadRecord(index, number, self._where(number), str(e))
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
        start, chunk, quote = 1, [], None
        while (item := self._next_line()) is not None:
            number, raw = item
            if quote is None and self._HEADER.match(raw):  # not a line of a multi-line string
                yield start, chunk
                start, chunk = number, []
            chunk.append(raw)
            quote = _multiline_string(raw, quote)
        yield start, chunk

    def _toml_parse(self, start: int, chunk: list[bytes]) -> dict:
        """Parse one piece; a syntax error names the line in the whole file."""
        try:
            return tomllib.loads(b"".join(line + b"\n" for line in chunk).decode("utf-8"))
        except UnicodeDecodeError:
            raise BatchInputError(self._where(start), "not UTF-8 text") from None
        except RecursionError:
            raise BatchInputError(self._where(start), "nested too deeply") from None
        except tomllib.TOMLDecodeError as e:
            text = str(e)
            at = re.search(r"\s*\(at line (\d+), column (\d+)\)", text)
            if at:
                line = start + int(at[1]) - 1
                raise BatchInputError(self._where(line), f"not valid TOML: {text[: at.start()]} (column {at[2]})") from None
            raise BatchInputError(self._where(start), f"not valid TOML: {text}") from None
        except ValueError:  # int() refused the digits (sys.get_int_max_str_digits)
            raise BatchInputError(self._where(start), "a number of more than 4300 digits") from None

    def _toml_defaults(self) -> dict:
        """The [defaults] table, checked for its shape; where it stands is `defaults_where`."""
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
        self.defaults_where = self._where(start + next((i for i, raw in enumerate(head) if raw.strip().startswith(b"[defaults")), 0))
        if not isinstance(defaults, dict):
            raise BatchInputError(self.defaults_where, "defaults must be a table: [defaults]")
        return defaults  # its fields are checked as a record's are (`tasks.check_defaults`)

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
    n, quote = 0, None
    with open(path, "rb") as f:
        for _, raw in _numbered_lines(f):
            if kind == "toml":
                n += quote is None and bool(InputFile._HEADER.match(raw))
                quote = _multiline_string(raw, quote)
            elif kind == "txt":
                n += _meaningful(raw)
            else:
                n += bool(raw.strip())
    return n
