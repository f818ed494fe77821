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


# Bans are bounded: each is matched against every tag of a vocabulary (30,000 for Dart v2).
MAX_BANS = 256
MAX_BAN_CHARS = 1024


def _re2_options():
    import re2  # google-re2: a regular expression engine whose time is linear in the text, whatever the pattern

    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False  # an invalid pattern is reported once, by its error, not logged by RE2 too
    return re2, options


def compile_bans(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate for `--ban` patterns: globs (`*hair*`, case-insensitive, whole tag) or `re:REGEX` (search,
    case-insensitive, RE2 syntax: no pattern can make matching take more than linear time). At most
    MAX_BANS patterns of at most MAX_BAN_CHARS characters each."""
    patterns = list(patterns)
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
        re2, options = _re2_options()
        for regex in regexes:
            try:
                re2.compile(regex, options)
            except re2.error as e:
                why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
                raise SettingError(f"{setting('ban')}: {'re:' + regex!r} is not a valid regular expression ({why})") from None
        searches.append(re2.compile("|".join(f"(?:{regex})" for regex in regexes), options).search)  # one pass per tag
    compiled = [*globs, *searches]

    def banned(tag: str) -> bool:
        return any(match(tag) for match in compiled)

    return banned


def escape(tag: str) -> str:
    """Web-UI prompt escaping: parentheses are attention syntax there, so a literal one gets a backslash."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)
