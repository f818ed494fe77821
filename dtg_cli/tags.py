"""Tag hygiene: splitting, tidying, banning, escaping and close matches."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Callable, Collection, Iterable

from dtg_cli.errors import UsageError

# People counts, which DanTagGen's prompt lists before the other general tags.
_SPECIAL = re.compile(r"^(?:\d\+?(?:girl|boy|other)s?|multiple (?:girls|boys|others)|no humans)$")


def split_tags(text: str | Iterable[str]) -> list[str]:
    """Comma-separated text, or a list of such texts, as a list of tags with their spaces tidied."""
    parts = [text] if isinstance(text, str) else list(text)
    return [" ".join(tag.split()) for part in parts for tag in str(part).split(",") if tag.strip()]


def clean(tags: Iterable[str], vocabulary: Collection[str] | None = None) -> list[str]:
    """Lower-case, collapse whitespace, turn underscores into spaces, drop empties and duplicates.

    A tag that is in `vocabulary` exactly as written keeps its underscores; without a vocabulary, tags of
    three characters or fewer keep them, since those are kaomoji such as ^_^ and o_o.
    """
    seen: set[str] = set()
    out = []
    for raw in tags:
        tag = " ".join(raw.lower().split())
        if "_" in tag and not (tag in vocabulary if vocabulary is not None else len(tag) <= 3):
            tag = " ".join(tag.replace("_", " ").split())
        if tag and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def is_special(tag: str) -> bool:
    return bool(_SPECIAL.match(tag))


def compile_bans(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate for `--ban` patterns: globs (`*hair*`, case-insensitive, whole tag) or `re:REGEX` (search)."""
    compiled = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                compiled.append(re.compile(pattern[3:], re.IGNORECASE).search)
            except re.error as e:
                raise UsageError(f"--ban: {pattern!r} is not a valid regular expression ({e})") from None
        else:
            glob = " ".join(pattern.replace("_", " ").split())
            if not glob:
                raise UsageError("--ban: empty pattern")
            compiled.append(re.compile(fnmatch.translate(glob), re.IGNORECASE).match)  # the whole tag

    def banned(tag: str) -> bool:
        return any(match(tag) for match in compiled)

    return banned


def escape(tag: str) -> str:
    """Web-UI prompt escaping: parentheses are attention syntax there, so a literal one gets a backslash."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)


def close_matches(tag: str, vocabulary: Collection[str], n: int = 3) -> list[str]:
    """Vocabulary entries that look like `tag` (a typo, a word order, a missing qualifier)."""
    candidates = [v for v in vocabulary if not v.startswith("<")]
    return difflib.get_close_matches(tag.lower(), candidates, n=n, cutoff=0.75)
