"""What a generation asks for: one typed object shared by the CLI, batch files and Python callers.

`Request` holds the tags, the conditions and the sampling settings, validates every value when it is
built, and knows nothing about any model. Each family's sampling defaults are in its module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from dtg_cli.errors import SettingError, UsageError, setting
from dtg_cli.syntax import MAX_PROMPT_CHARS
from dtg_cli.tagtext import compile_bans, split_tags

RATINGS = ("sfw", "general", "sensitive", "nsfw", "questionable", "explicit")
LENGTHS = ("very_short", "short", "medium", "long", "very_long")
IDENTITIES = ("none", "lax", "strict")
WRITES = ("tags", "nl", "both")
# Representative width/height for each named aspect ratio: typical SDXL buckets, each inside Dart's
# bucket of the same name (REFERENCE thresholds), so both families read a name the same way.
ASPECT_RATIOS = {"ultra_tall": 0.5, "tall": 0.7, "square": 1.0, "wide": 1.5, "ultra_wide": 2.0}

# Condition defaults when the user gives none (the choices of the dartrs CLI; a portrait image).
DEFAULT_RATING = "sfw"
DEFAULT_LENGTH = "long"
DEFAULT_IDENTITY = "lax"
DEFAULT_ASPECT_RATIO = ASPECT_RATIOS["tall"]


def _is_tags(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _is_integer(value: Any) -> bool:
    """An int, or a float with no fraction (JSON's 2.0); never converted, so a 5,000-digit int is one too."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def shown(value: Any) -> str:
    """A value as an error message quotes it: an integer of hundreds of digits by its size (Python refuses
    to write one of more than 4,300 digits), a long text cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# What each kind of setting accepts, and that in words.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tags": (_is_tags, "a string or a list of strings"),
    "patterns": (_is_tags, "a string or a list of strings"),
    "choice": (lambda v: isinstance(v, str), "a string"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "aspect": (lambda v: isinstance(v, str) or _is_number(v), "a name, a number or W:H"),
    "int": (_is_integer, "an integer"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


@dataclass(frozen=True)
class Setting:
    """One setting of a request, declared once in `SETTINGS`: `Request`, `Sampling`, batch records and the
    options of `dtg generate` and `dtg batch` are all derived from it."""

    name: str  # the field name (a record's key, a keyword of `Request.from_options`); the flag is --name-with-dashes
    kind: str  # tags, patterns, choice, aspect, int, float or bool
    group: str  # prompt (what to read), condition (what the prompt states), sampling, or run (how many, what to ban)
    help: str  # for --help; a sampling setting's names each family's default (`tests/test_settings.py` checks them)
    choices: tuple[str, ...] = ()
    within: Callable[[Any], bool] | None = None  # the range of a number
    limits: str = ""  # that range in words
    panel: str = "Conditions"  # the --help panel of the option
    option: bool = True  # an option of dtg generate and dtg batch (tags is their argument)
    short: str | None = None  # the option's one-letter flag

    def check_type(self, value: Any) -> None:
        """Refuse a value of the wrong type, as JSON or TOML can give it (None is unset)."""
        fits, what = _TYPES[self.kind]
        if value is not None and not fits(value):
            raise SettingError(f"{setting(self.name)}: {shown(value)} must be {what}")

    def check(self, value: Any) -> Any:
        """A value of this setting, checked (type, choices, range) and normalised; None stays None."""
        self.check_type(value)
        if value is None:
            return None
        if self.kind == "choice":
            normal = value.strip().lower().replace("-", "_").replace(" ", "_")
            if normal not in self.choices:
                raise SettingError(f"{setting(self.name)}: {value!r} is not one of {', '.join(self.choices)}")
            return normal
        if self.kind == "aspect":
            return parse_aspect_ratio(value)
        if self.kind == "text":
            if len(value) > MAX_PROMPT_CHARS:  # bounded before anything reads it, as a prompt's tags are
                raise SettingError(f"{setting(self.name)}: {len(value)} characters; a text holds at most {MAX_PROMPT_CHARS}")
            if not value.strip():
                raise SettingError(f"{setting(self.name)}: an empty text; give a caption or leave it out")
            return " ".join(value.split())  # one line: a newline would start a new field of a prompt
        if self.within is not None and not ((not isinstance(value, float) or math.isfinite(value)) and self.within(value)):
            raise SettingError(f"{setting(self.name)}: {value if isinstance(value, float) else shown(value)} must be {self.limits}")
        if self.kind == "int" and isinstance(value, float):
            return int(value)  # JSON's 2.0, within its range by now
        return value


_SAMPLING = "Sampling (defaults per model family)"
_OUTPUT = "Output"

SETTINGS: tuple[Setting, ...] = (
    Setting("tags", "tags", "prompt", "The prompt's tags, comma-separated.", option=False),
    Setting("copyright", "tags", "condition", "Copyright tags (comma-separated)."),
    Setting("character", "tags", "condition", "Character tags (comma-separated)."),
    Setting("artist", "tags", "condition", "Artist tags (DanTagGen)."),
    Setting("quality", "tags", "condition", "DanTagGen delta and TIPO: quality tags, e.g. masterpiece."),
    Setting("meta", "tags", "condition", "TIPO: meta tags, e.g. highres, absurdres."),
    Setting("rating", "choice", "condition", "sfw, general, sensitive, nsfw, questionable or explicit (default: sfw).", RATINGS),
    Setting(
        "aspect_ratio", "aspect", "condition", "ultra_tall, tall, square, wide, ultra_wide, a number (width/height) or W:H (default: tall)."
    ),
    Setting("width", "int", "condition", "Image width; with --height, instead of --aspect-ratio.", within=lambda v: 1 <= v <= 1_000_000, limits="between 1 and 1000000"),
    Setting("height", "int", "condition", "Image height.", within=lambda v: 1 <= v <= 1_000_000, limits="between 1 and 1000000"),
    Setting("length", "choice", "condition", "very_short, short, medium, long or very_long (default: long).", LENGTHS),
    Setting("identity", "choice", "condition", "Dart SFT: none, lax or strict, how closely to keep the given subjects (default: lax).", IDENTITIES),
    Setting("nl", "text", "condition", "TIPO: a natural-language prompt (a caption); TAGS may then be empty."),
    Setting("write", "choice", "condition", "TIPO: tags, nl (a caption) or both: what to write (default: tags).", WRITES),
    Setting(
        "auto",
        "bool",
        "prompt",
        "Sort a flat tag list into the prompt's fields (character, copyright, artist, rating, quality, general) by the tag "
        "database (default: on); a field's own flag wins.",
    ),
    Setting("temperature", "float", "sampling", "0 (or below 0.0001) is greedy (default: dart-v2 1.0, tipo 0.35, dantaggen 1.35).", within=lambda v: 0 <= v <= 100, limits="between 0 and 100", panel=_SAMPLING),
    Setting("top_p", "float", "sampling", "Nucleus sampling, 1 is off (default: dart-v2 1.0, tipo 0.95, dantaggen 0.95).", within=lambda v: 0 < v <= 1, limits="in (0, 1]", panel=_SAMPLING),
    Setting("top_k", "int", "sampling", "Keep the k likeliest tokens, 0 is off (default: dart-v2 100, tipo 60, dantaggen 100).", within=lambda v: v >= 0, limits="0 or more", panel=_SAMPLING),
    Setting(
        "min_p", "float", "sampling", "Drop tokens below this fraction of the likeliest, 0 is off (default: dart-v2 0.0, tipo 0.1, dantaggen 0.0).",
        within=lambda v: 0 <= v < 1, limits="in [0, 1)", panel=_SAMPLING,
    ),
    Setting(
        "max_new_tokens", "int", "sampling", "Token budget per result (default: dart-v2 256, tipo 512, dantaggen 512).",
        within=lambda v: 1 <= v <= 4096, limits="between 1 and 4096", panel=_SAMPLING,
    ),
    Setting(
        "repeat_penalty", "float", "sampling", "llama.cpp's penalty on the last 64 generated tokens, 1 is off (default: dart-v2 1.0, tipo 1.17, dantaggen 1.0).",
        within=lambda v: 0.01 <= v <= 10, limits="between 0.01 and 10", panel=_SAMPLING,
    ),
    Setting(
        "seed", "int", "sampling", "Seed of the first result (the next get seed+1, ...); default: random.",
        within=lambda v: 0 <= v < 2**32, limits="between 0 and 2**32 - 1", panel=_SAMPLING,
    ),
    Setting("ban", "patterns", "run", "A tag that must not appear: a glob such as '*hair*' or re:REGEX. Repeatable.", panel=_SAMPLING),
    Setting(
        "retries", "int", "run", "How many times a result below its length's minimum is continued, 0 is off (default: DanTagGen 3, TIPO 10).",
        within=lambda v: 0 <= v <= 100, limits="between 0 and 100", panel=_SAMPLING,
    ),
    Setting("num", "int", "run", "Results per prompt, with seeds seed, seed+1, ...", within=lambda v: 1 <= v <= 1000, limits="between 1 and 1000", panel=_OUTPUT, short="-n"),
)  # fmt: skip
SETTING = {s.name: s for s in SETTINGS}
CONDITIONS = tuple(s.name for s in SETTINGS if s.group == "condition" and s.name not in ("width", "height"))  # Request fields
SAMPLING = tuple(s.name for s in SETTINGS if s.group == "sampling")
# The Request fields that hold one value (the tag lists are read by `dtg_cli.reading.read`; width and height
# become aspect_ratio in `Request.from_options`).
SINGLE_VALUED = tuple(
    s.name for s in SETTINGS if s.group != "sampling" and s.kind not in ("tags", "patterns") and s.name not in ("width", "height")
)


def parse_aspect_ratio(value: str | float | int) -> float:
    """A name (tall, square, ...), a number (0.75) or a ratio (3:4, 832x1216) as width / height."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ratio = float(value)
    else:
        text = str(value).strip().lower()
        name = text.replace("-", "_")  # a name's dashes, not a number's (5e-1)
        if name in ASPECT_RATIOS:
            return ASPECT_RATIOS[name]
        parts = re.split(r"[:x/]", text)
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            ratio = numbers[0]
        elif len(numbers) == 2 and numbers[1] > 0:
            ratio = numbers[0] / numbers[1]
        else:
            raise SettingError(
                f"{setting('aspect_ratio')}: {value!r} is not a name ({', '.join(ASPECT_RATIOS)}), a number or W:H"
            ) from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise SettingError(f"{setting('aspect_ratio')}: {value!r} must be a positive width / height")
    return ratio


@dataclass(frozen=True)
class Sampling:
    """Sampling settings. None means the model family's default (`Family.sampling`)."""

    temperature: float | None = None  # 0: greedy
    top_p: float | None = None  # 1: off
    top_k: int | None = None  # 0: off
    min_p: float | None = None  # 0: off
    max_new_tokens: int | None = None
    repeat_penalty: float | None = None  # 1: off
    seed: int | None = None  # None: a random seed, reported with the result

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, SETTING[f.name].check(getattr(self, f.name)))

    def with_defaults(self, defaults: Sampling) -> Sampling:
        """These settings with every unset value taken from `defaults`."""
        return replace(self, **{f.name: getattr(defaults, f.name) for f in fields(self) if getattr(self, f.name) is None})


@dataclass(frozen=True)
class Request:
    """One prompt to generate from. Tags are kept as given; `dtg_cli.reading.read` tidies them."""

    tags: tuple[str, ...] = ()
    copyright: tuple[str, ...] = ()
    character: tuple[str, ...] = ()
    artist: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()
    rating: str | None = None
    aspect_ratio: float | None = None  # width / height
    length: str | None = None
    identity: str | None = None
    nl: str | None = None  # a caption (TIPO)
    write: str | None = None  # tags (None), nl or both (TIPO)
    retries: int | None = None  # None: the family's `max_retries`
    ban: tuple[str, ...] = ()
    num: int = 1
    auto: bool = True  # sort a flat tag list into the prompt's fields by the tag database (--no-auto)
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self):
        for name in SINGLE_VALUED:
            object.__setattr__(self, name, SETTING[name].check(getattr(self, name)))
        compile_bans(self.ban)  # a bad pattern is an error now, not after the model has loaded

    def conditions(self) -> list[str]:
        """The names of the conditions this request sets (to check them against a prompt format)."""
        return [n for n in CONDITIONS if getattr(self, n) not in (None, ()) and not (n == "write" and self.write == "tags")]

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Request:
        """Build a request from values named as in `SETTINGS` (None: not given); raises UsageError."""
        given = {k: v for k, v in values.items() if v is not None}
        sampling = {k: given.pop(k) for k in SAMPLING if k in given}
        return cls.from_options(given.pop("tags", ""), sampling=sampling, **given)

    @classmethod
    def from_options(
        cls,
        tags: str | list[str] | tuple[str, ...] = (),
        *,
        width: int | None = None,
        height: int | None = None,
        aspect_ratio: str | float | None = None,
        sampling: Sampling | Mapping[str, Any] | None = None,
        **conditions: Any,
    ) -> Request:
        """Build a request from loose values: comma-separated strings or lists for tag fields, width and
        height instead of an aspect ratio, sampling as a mapping. Raises UsageError on anything invalid."""
        for name, value in (("width", width), ("height", height), *conditions.items()):
            if name in SETTING:
                SETTING[name].check_type(value)
        if (width is None) != (height is None):
            raise SettingError(f"{setting('width')} and {setting('height')} go together")
        if width is not None:
            if aspect_ratio is not None:
                raise SettingError(f"give {setting('aspect_ratio')} or {setting('width')}/{setting('height')}, not both")
            width, height = (int(v) if isinstance(v, float) and v.is_integer() else v for v in (width, height))  # JSON's 832.0
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise SettingError(f"{setting('width')}/{setting('height')}: {shown(width)}x{shown(height)} must be positive integers")
            SETTING["width"].check(width)
            SETTING["height"].check(height)
            aspect_ratio = width / height
        values: dict[str, Any] = {}
        for name in (s.name for s in SETTINGS if s.kind in ("tags", "patterns") and s.name != "tags"):
            value = conditions.pop(name, None)
            if value and name == "ban":
                values[name] = (value,) if isinstance(value, str) else tuple(value)  # patterns may hold commas
            elif value:
                values[name] = tuple(split_tags(value))
        if isinstance(sampling, Mapping):
            known = {f.name for f in fields(Sampling)}
            unknown = set(sampling) - known
            if unknown:
                raise UsageError(f"unknown sampling setting {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
            sampling = Sampling(**sampling)
        unknown = set(conditions) - set(SINGLE_VALUED) - {"aspect_ratio"}
        if unknown:
            raise UsageError(f"unknown setting {', '.join(sorted(unknown))}")
        return cls(
            tags=tuple(split_tags(tags)),
            aspect_ratio=aspect_ratio,
            sampling=sampling or Sampling(),
            **values,
            **{k: v for k, v in conditions.items() if v is not None},
        )
