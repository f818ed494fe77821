"""The danbooru tag database that ships with dtg: names, categories, post counts and aliases.

`dtg_cli/data/danbooru_tags.bin` is built from the tagcomplete project's danbooru.csv (see the NOTICE
beside it) by `python -m dtg_cli.tagdb build CSV OUT`. It holds these sections, uncompressed (the wheel
and git compress the file; decompressing it would be paid by every `dtg generate`):

    keys      every tag's lookup key (lower case, underscores as spaces), sorted, one per line
    keys_bounds
              where each line of `keys` starts, then the length of `keys` + 1 (uint32 little-endian)
    category  one byte per tag: 0 general, 1 artist, 3 copyright, 4 character, 5 meta
    count     post counts, uint32 little-endian
    names     the few tags whose written name is not their key (kaomoji such as ^_^), as JSON
    alias_keys / alias_keys_bounds / alias_target
              alias keys, sorted, where each starts, and the index of the tag each one stands for

Nothing is read until the first lookup; a lookup is a binary search over the key section, so opening
the database is one read of the file and no parsing of 140,000 rows.
"""

from __future__ import annotations

import bisect
import csv
import difflib
import fnmatch
import gzip
import json
import math
import re
import struct
import sys
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from dtg_cli.errors import DtgError

DATA = Path(__file__).parent / "data" / "danbooru_tags.bin"
MAGIC = b"DTGTAGS2"
DANBOORU_CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}  # danbooru category id -> name


def key(tag: str) -> str:
    """The form tags are compared in: lower case, underscores as spaces, single spaces."""
    return " ".join(tag.lower().replace("_", " ").split())


def written_name(name: str) -> str:
    """How dtg writes a danbooru tag name: underscores as spaces, except in kaomoji and other names made of
    single characters (^_^, o_o, t_k_g), where the underscore is part of the picture or the name."""
    name = name.lower()
    if len(name) <= 3 or not re.search(r"[a-z0-9]{2}", name):
        return name
    return key(name)


@dataclass(frozen=True)
class Tag:
    name: str  # as dtg writes it ("long hair", "^_^")
    category: str  # general, artist, copyright, character or meta
    count: int  # danbooru posts
    alias: str | None = None  # the alias it was found by, if it was


class _Lines:
    """A sorted blob of newline-separated keys, indexed by where each line starts (bisect reads it directly)."""

    def __init__(self, blob: bytes, bounds: bytes):
        self.blob = blob
        self.bounds = np.frombuffer(bounds, dtype="<u4")  # each line's start, then len(blob) + 1

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> bytes:
        return self.blob[int(self.bounds[i]) : int(self.bounds[i + 1]) - 1]

    @cached_property
    def starts(self) -> np.ndarray:
        return self.bounds[:-1].astype(np.int64)

    @cached_property
    def ends(self) -> np.ndarray:
        return self.bounds[1:].astype(np.int64) - 1

    def find(self, text: str) -> int | None:
        wanted = text.encode()
        i = bisect.bisect_left(self, wanted)
        return i if i < len(self) and self[i] == wanted else None

    def index_of(self, positions: np.ndarray) -> np.ndarray:
        """The line index of each byte position."""
        return np.searchsorted(self.starts, positions, side="right") - 1


def _bounds(lines: list[str]) -> bytes:
    """What `_Lines` reads beside a blob of `lines`: where each starts, then the blob's length + 1."""
    starts = np.cumsum([0] + [len(line.encode()) + 1 for line in lines], dtype=np.int64)
    return starts.astype("<u4").tobytes()


class TagDatabase:
    def __init__(self, path: Path = DATA):
        self.path = path
        try:
            data = path.read_bytes()
            if not data.startswith(MAGIC):
                raise ValueError("not a dtg tag database")
            (header_len,) = struct.unpack_from("<I", data, len(MAGIC))
            start = len(MAGIC) + 4
            header = json.loads(data[start : start + header_len])
            offset = start + header_len
            self._sections: dict[str, bytes] = {}
            for name, size in header["sections"]:
                self._sections[name] = data[offset : offset + size]
                offset += size
        except (OSError, ValueError, KeyError, struct.error) as e:
            raise DtgError(f"{path}: the tag database cannot be read ({e}); reinstall dtg") from None

    @cached_property
    def keys(self) -> _Lines:
        return _Lines(self._sections["keys"], self._sections["keys_bounds"])

    @cached_property
    def categories(self) -> np.ndarray:
        return np.frombuffer(self._sections["category"], dtype=np.uint8)

    @cached_property
    def counts(self) -> np.ndarray:
        return np.frombuffer(self._sections["count"], dtype="<u4")

    @cached_property
    def names(self) -> dict[int, str]:
        return {int(i): n for i, n in json.loads(self._sections["names"]).items()}

    @cached_property
    def alias_keys(self) -> _Lines:
        return _Lines(self._sections["alias_keys"], self._sections["alias_keys_bounds"])

    @cached_property
    def alias_targets(self) -> np.ndarray:
        return np.frombuffer(self._sections["alias_target"], dtype="<u4")

    def __len__(self) -> int:
        return len(self.keys)

    def entry(self, index: int, alias: str | None = None) -> Tag:
        name = self.names.get(index) or self.keys[index].decode()
        return Tag(name, DANBOORU_CATEGORIES.get(int(self.categories[index]), "general"), int(self.counts[index]), alias)

    def _find(self, tag: str) -> tuple[int, str | None] | None:
        """(index, the alias it was found by) of `tag`, by name, then by alias."""
        k = key(tag)
        if not k:
            return None
        i = self.keys.find(k)
        if i is not None:
            return i, None
        a = self.alias_keys.find(k)
        return (int(self.alias_targets[a]), k) if a is not None else None

    def index(self, tag: str) -> int | None:
        found = self._find(tag)
        return found[0] if found else None

    def lookup(self, tag: str) -> Tag | None:
        """The canonical tag for a name or an alias, in any case, with underscores or spaces."""
        found = self._find(tag)
        return self.entry(*found) if found else None

    def aliases_of(self, index: int) -> list[str]:
        return [self.alias_keys[int(a)].decode() for a in np.flatnonzero(self.alias_targets == index)]

    def search(self, pattern: str, limit: int = 20, category: str | None = None) -> list[Tag]:
        """The most used tags matching a glob (`*hair*`, `cat?ears`) or, without glob characters, a prefix."""

        k = key(pattern)
        glob = k if any(c in k for c in "*?[") else k + "*"
        body = fnmatch.translate(glob)  # (?s:...)\Z; made to match one line of the key blob
        body = body.replace("(?s:", "(?:").replace(r"\Z", "").replace(".*", "[^\n]*").replace("(?:.)", "[^\n]")
        regex = re.compile(("^" + body + "$").encode(), re.MULTILINE)
        hits = [m.start() for m in regex.finditer(self.keys.blob)]
        if not hits:
            return []
        found = self.keys.index_of(np.array(hits, dtype=np.int64))
        if category is not None:
            code = {v: k for k, v in DANBOORU_CATEGORIES.items()}[category]
            found = found[self.categories[found] == code]
        best = found[np.argsort(-self.counts[found].astype(np.int64), kind="stable")[:limit]]
        return [self.entry(int(i)) for i in best]

    @cached_property
    def _bigrams(self) -> tuple[np.ndarray, np.ndarray]:
        def codes(blob: bytes) -> np.ndarray:
            b = np.frombuffer(blob, dtype=np.uint8).astype(np.uint16)
            return (b[:-1] << 8) | b[1:]

        return codes(self.keys.blob), codes(self.alias_keys.blob)

    def suggest(self, tag: str, n: int = 3, allowed=None) -> list[str]:
        """Up to `n` tags the user may have meant: first the tags a known tag is related to by an alias, then
        close spellings of names and aliases, which count for more the more posts a tag has. `allowed(name)` limits them (a model's vocabulary)."""

        allowed = allowed or (lambda name: True)
        k = key(tag)
        out: list[str] = []

        def add(name: str) -> None:
            if name not in out and key(name) != k and allowed(name):
                out.append(name)

        i = self.index(k)
        if i is not None:  # a known tag the model lacks: its aliases, then the tags it is an alias of
            for alias in self.aliases_of(i):
                add(written_name(alias))
            entry = self.entry(i)
            add(entry.name)
        if len(k) < 2:
            return out[:n]
        query = k.encode()
        grams = {(query[j] << 8) | query[j + 1] for j in range(len(query) - 1)}
        scored: list[tuple[float, str, bool]] = []
        for lines, codes, via_alias in ((self.keys, self._bigrams[0], False), (self.alias_keys, self._bigrams[1], True)):
            hits = [np.unique(lines.index_of(np.flatnonzero(codes == g))) for g in grams]
            if not hits:
                continue
            common = np.bincount(np.concatenate(hits), minlength=len(lines))
            lengths = (lines.ends - lines.starts - 1).clip(min=1)
            dice = 2 * common / (len(grams) + lengths)
            for j in np.argsort(-dice, kind="stable")[:40]:
                if dice[j] < 0.5:
                    break
                candidate = lines[int(j)].decode()
                ratio = difflib.SequenceMatcher(None, k, candidate).ratio()
                if ratio < 0.75:
                    continue
                target = int(self.alias_targets[j]) if via_alias else int(j)
                entry = self.entry(target)
                scored.append((ratio + 0.02 * math.log10(entry.count + 1), entry.name, via_alias))
        for _, name, _ in sorted(scored, key=lambda s: (-s[0], s[2])):
            add(name)
        return out[:n]


@cache
def database() -> TagDatabase:
    """The bundled database, opened on first use."""
    return TagDatabase()


# --- building the data file -------------------------------------------------------------------------


def build(csv_path: Path, out: Path) -> dict:
    """Write the database from tagcomplete's danbooru.csv (plain or .gz): name,category,count,"aliases"."""

    opener = gzip.open if csv_path.suffix == ".gz" else open
    with opener(csv_path, "rt", encoding="utf-8", newline="") as f:
        rows = [(r[0], int(r[1]), int(r[2]), r[3]) for r in csv.reader(f) if r]
    rows.sort(key=lambda r: key(r[0]))
    keys = [key(r[0]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("two tags share a key")
    index = {k: i for i, k in enumerate(keys)}
    aliases: dict[str, int] = {}
    for i, (_, _, count, alias_text) in enumerate(rows):
        for alias in alias_text.split(","):
            a = key(alias)
            # A name is never shadowed by an alias; an alias of several tags stands for the most used one.
            if a and a not in index and (a not in aliases or rows[aliases[a]][2] < count):
                aliases[a] = i
    alias_keys = sorted(aliases)
    names = {str(i): written_name(r[0]) for i, r in enumerate(rows) if written_name(r[0]) != keys[i]}
    sections = {
        "keys": "\n".join(keys).encode(),
        "keys_bounds": _bounds(keys),
        "category": bytes(r[1] for r in rows),
        "count": np.array([r[2] for r in rows], dtype="<u4").tobytes(),
        "names": json.dumps(names, sort_keys=True).encode(),
        "alias_keys": "\n".join(alias_keys).encode(),
        "alias_keys_bounds": _bounds(alias_keys),
        "alias_target": np.array([aliases[a] for a in alias_keys], dtype="<u4").tobytes(),
    }
    header = json.dumps({"tags": len(rows), "aliases": len(alias_keys), "sections": [[n, len(p)] for n, p in sections.items()]}).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + b"".join(sections.values()))
    return {"tags": len(rows), "aliases": len(alias_keys), "bytes": out.stat().st_size}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "build":
        sys.exit("usage: python -m dtg_cli.tagdb build DANBOORU_CSV OUT")
    print(build(Path(sys.argv[2]), Path(sys.argv[3])))
