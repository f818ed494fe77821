"""`merge`: the JSONL outputs of a sharded run (`--shard K/N`) as one stream in input order, checked first."""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Iterator

from dtg_cli.batch.outfile import read_place, same_file
from dtg_cli.batch.records import BatchInputError
from dtg_cli.errors import UsageError


def merge(paths: list[str], *, allow_gaps: bool = False, output: os.stat_result | None = None) -> Iterator[tuple[dict, bytes]]:
    """The records of several JSONL outputs (one per shard) in input order, read as streams: each file is
    already in order, so this is a k-way merge on (line, variant). The files are read twice: first to
    check them, so that nothing is written when a result is in two files, a record (by the records'
    `record` numbers) in none (unless `allow_gaps`) or the files hold results of different models. So each
    must be a regular file (a pipe would be empty the second time), and none the `output` (which would
    grow as it is read)."""
    for path in paths:
        _check_input(path, output)
    _check_merge(_merged(paths), allow_gaps)
    for _, _, _, record, raw in _merged(paths):
        yield record, raw


def _check_input(path: str, output: os.stat_result | None) -> None:
    try:
        info = os.stat(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a directory, not a batch output")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(
            f"{path}: not a regular file; dtg merge reads each file twice (it checks them before writing), so save a pipe to a file first"
        )
    if output is not None and same_file(info, output):
        raise UsageError(f"{path}: the merge's output is this input; write the merge to another file")


def _merged(paths: list[str]) -> Iterator[tuple[tuple[int, int], str, int, dict, bytes]]:

    def read(path: str) -> Iterator[tuple[tuple[int, int], str, int, dict, bytes]]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
        with f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record, key = read_place(raw)
                except (ValueError, KeyError, TypeError):
                    raise BatchInputError(f"{path}:{number}", "not a dtg batch JSONL record (with line and variant)") from None
                if not isinstance(record.get("text"), str) or not isinstance(record.get("model"), str):
                    raise BatchInputError(f"{path}:{number}", "not a dtg batch JSONL record (its text and model are not strings)")
                yield key, path, number, record, raw if raw.endswith(b"\n") else raw + b"\n"

    return heapq.merge(*(read(p) for p in paths), key=lambda r: r[0])


def _check_merge(merged: Iterator, allow_gaps: bool) -> None:
    previous = None  # (key, path, record number or None) of the record before
    model = None  # (name, path) of the first record's model
    for key, path, number, record, _ in merged:
        if model is None:
            model = (record["model"], path)
        elif record["model"] != model[0]:
            raise BatchInputError(
                f"{path}:{number}", f"a result of {record['model']}, but {model[1]} holds results of {model[0]}: shards of different runs"
            )
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
