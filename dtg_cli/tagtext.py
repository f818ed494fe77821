"""Tag text, before any lookup: splitting comma-separated text, people counts, `--ban` patterns and web-UI
escaping. Below the settings table, which validates with these."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

from dtg_cli.errors import SettingError, setting

# People counts, which DanTagGen's prompt lists before the other general tags.
_SPECIAL = re.compile(r"^(?:\d\+?(?:girl|boy|other)s?|multiple (?:girls|boys|others)|no humans)$")


def split_tags(text: str | Iterable[str]) -> list[str]:
    """Comma-separated text, or a list of such texts, as a list of tags with their spaces tidied."""
    parts = [text] if isinstance(text, str) else list(text)
    return [" ".join(tag.split()) for part in parts for tag in str(part).split(",") if tag.strip()]


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
                raise SettingError(f"{setting('ban')}: {pattern!r} is not a valid regular expression ({e})") from None
        else:
            glob = " ".join(pattern.replace("_", " ").split())
            if not glob:
                raise SettingError(f"{setting('ban')}: empty pattern")
            compiled.append(re.compile(fnmatch.translate(glob), re.IGNORECASE).match)  # the whole tag

    def banned(tag: str) -> bool:
        return any(match(tag) for match in compiled)

    return banned


def escape(tag: str) -> str:
    """Web-UI prompt escaping: parentheses are attention syntax there, so a literal one gets a backslash."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)
