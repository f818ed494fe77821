"""Tag text, before any lookup: splitting comma-separated text, people counts, `--ban` patterns and web-UI
escaping. Below the settings table, which validates with these."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable

from dtg_cli.errors import SettingError, setting
from dtg_cli.linear_regex import compile_linear

# People counts, which DanTagGen's prompt lists before the other general tags.
_SPECIAL = re.compile(r"^(?:\d\+?(?:girl|boy|other)s?|multiple (?:girls|boys|others)|no humans)$")


def split_tags(text: str | Iterable[str]) -> list[str]:
    """Comma-separated text, or a list of such texts, as a list of tags with their spaces tidied."""
    parts = [text] if isinstance(text, str) else list(text)
    return [" ".join(tag.split()) for part in parts for tag in str(part).split(",") if tag.strip()]


def is_special(tag: str) -> bool:
    return bool(_SPECIAL.match(tag))


# Bans are bounded: each is matched against every tag of a vocabulary (30,000 for Dart v2).
MAX_BANS = 256
MAX_BAN_CHARS = 1024


def compile_bans(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate for `--ban` patterns: globs (`*hair*`, case-insensitive, whole tag) or `re:REGEX` (search,
    case-insensitive, RE2 syntax: no pattern can make matching take more than linear time). At most
    MAX_BANS patterns of at most MAX_BAN_CHARS characters each. A request's bans are compiled when it is
    built and again when it is prepared, and a batch repeats them record after record: the last few lists
    are kept compiled."""
    return _compiled_bans(tuple(patterns))


@functools.lru_cache(maxsize=16)
def _compiled_bans(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    if len(patterns) > MAX_BANS:
        raise SettingError(f"{setting('ban')}: {len(patterns)} patterns; at most {MAX_BANS}")
    globs, regexes = [], []
    for pattern in patterns:
        if len(pattern) > MAX_BAN_CHARS:
            raise SettingError(f"{setting('ban')}: a pattern of {len(pattern)} characters; at most {MAX_BAN_CHARS}")
        if pattern.startswith("re:"):
            regexes.append(pattern[3:])
        else:
            glob = " ".join(pattern.replace("_", " ").split())
            if not glob:
                raise SettingError(f"{setting('ban')}: empty pattern")
            globs.append(re.compile(fnmatch.translate(glob), re.IGNORECASE).match)  # the whole tag
    searches = []
    if regexes:
        for regex in regexes:
            try:
                compile_linear(regex)
            except ValueError as e:
                raise SettingError(f"{setting('ban')}: {'re:' + regex!r} is not a valid regular expression ({e})") from None
        searches.append(compile_linear("|".join(f"(?:{regex})" for regex in regexes), ignore_case=True).search)  # one pass per tag
    compiled = [*globs, *searches]

    def banned(tag: str) -> bool:
        return any(match(tag) for match in compiled)

    return banned


# C0 controls (newline, ESC...), DEL and C1 controls (U+009B is a terminal's CSI on its own).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text as it may reach a terminal or one line of output: every control character (from a model's
    vocabulary, a GGUF's metadata or user text) written as an escape such as \\x1b or \\x0a."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def escape(tag: str) -> str:
    """Web-UI prompt escaping: parentheses are attention syntax there, so a literal one gets a backslash."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)
