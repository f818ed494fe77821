"""Records to tasks: a record's fields checked and layered over the file's [defaults] and the caller's
options, its seeds (its own, or derived from the base seed and its id), and which shard it belongs to."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from dtg_cli.batch.records import BatchInputError, Record
from dtg_cli.errors import UsageError
from dtg_cli.outcomes import Task
from dtg_cli.settings import SAMPLING, SETTING, Request

RECORD_FIELDS = frozenset({"id", *SETTING})  # every setting, and the record's id
DEFAULT_FIELDS = RECORD_FIELDS - {"id"}  # in [defaults], `seed` is the base seed
ASPECT_FIELDS = ("aspect_ratio", "width", "height")


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


def unknown_fields(names: Iterable[str], known: Iterable[str]) -> str:

    parts = []
    for name in sorted(names):
        near = difflib.get_close_matches(str(name), sorted(known), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {near[0]}?)" if near else ""))
    return f"unknown field {', '.join(parts)}; known: {', '.join(sorted(known))}"


@dataclass(frozen=True)
class RecordKey:
    """What the engine hands back with each result of a record."""

    record_id: Any
    index: int  # the record's place in the input, from 0, bad records included (what --shard counts)
    line: int
    first_variant: int  # > 0 when a resumed run finishes a record whose first results were written


def check_types(fields: dict) -> None:
    for name, value in fields.items():
        if name == "id":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise UsageError(f"id: {value!r} must be a non-empty string or an integer")
        else:
            SETTING[name].check_type(value)


def layered_request(layers: Iterable[dict]) -> Request:
    """A request from layers of settings, weakest first: a stronger layer's value wins (None is not given),
    and a stronger layer's image shape (aspect ratio, or width and height) replaces a weaker one's whole.
    A SettingError names the fields."""
    merged: dict = {}
    for layer in layers:
        given = {k: v for k, v in layer.items() if v is not None}
        if any(k in given for k in ASPECT_FIELDS):
            for k in ASPECT_FIELDS:
                merged.pop(k, None)
        merged.update(given)
    sampling = {k: merged.pop(k) for k in SAMPLING if k in merged}
    return Request.from_options(merged.pop("tags", ""), sampling=sampling, num=merged.pop("num", 1), **merged)


def build_task(record: Record, options: dict, file_defaults: dict, base_seed: int) -> Task:
    """A record's request and seeds; raises UsageError for anything invalid."""
    fields = record.fields
    unknown = set(fields) - RECORD_FIELDS
    if unknown:
        raise UsageError(unknown_fields(unknown, RECORD_FIELDS))
    check_types(fields)
    own = {k: v for k, v in fields.items() if k not in ("id", "seed")}
    request = layered_request(({k: v for k, v in file_defaults.items() if k != "seed"}, options, own))
    num = request.num
    record_id = fields.get("id", record.line)
    seed = fields.get("seed")
    if seed is not None:
        seed = SETTING["seed"].check(seed)
        if seed + num > 2**32:
            raise UsageError(f"seed: {seed} with num {num} runs past the largest seed, 4294967295")
        seeds = tuple(seed + v for v in range(num))
    else:
        seeds = tuple(derive_seed(base_seed, record_id, v) for v in range(num))
    return Task(request, seeds, key=RecordKey(record_id, record.index, record.line, 0))


def from_variant(task: Task, first: int) -> Task:
    """The task without its first `first` results (already written by an earlier run)."""
    request = replace(task.request, num=task.request.num - first)
    return Task(request, task.seeds[first:], key=replace(task.key, first_variant=first))


def check_defaults(defaults: dict, where: str) -> None:
    """A file's [defaults] hold fields a record may hold (its `seed` is the base seed), with values a record
    may have: a bad one is reported once, here, not on every record."""
    unknown = set(defaults) - DEFAULT_FIELDS
    if unknown:
        raise BatchInputError(where, f"[defaults]: {unknown_fields(unknown, DEFAULT_FIELDS)}")
    try:
        build_task(Record(0, 0, {k: v for k, v in defaults.items() if k != "seed"}), {}, {}, 0)
    except UsageError as e:
        raise BatchInputError(where, f"[defaults] {e}") from None
