"""What a generation asks for: one typed object shared by the CLI, batch files and Python callers.

`Request` holds the tags, the conditions and the sampling settings, validates every value when it is
built, and knows nothing about any model. Each family's sampling defaults are in its module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from dtg_cli.errors import SettingError, UsageError, setting
from dtg_cli.tags import compile_bans, split_tags

RATINGS = ("sfw", "general", "sensitive", "nsfw", "questionable", "explicit")
LENGTHS = ("very_short", "short", "medium", "long", "very_long")
IDENTITIES = ("none", "lax", "strict")
# Representative width/height for each named aspect ratio: typical SDXL buckets, each inside Dart's
# bucket of the same name (REFERENCE thresholds), so both families read a name the same way.
ASPECT_RATIOS = {"ultra_tall": 0.5, "tall": 0.7, "square": 1.0, "wide": 1.5, "ultra_wide": 2.0}

# Condition defaults when the user gives none (the choices of the dartrs CLI; a portrait image).
DEFAULT_RATING = "sfw"
DEFAULT_LENGTH = "long"
DEFAULT_IDENTITY = "lax"
DEFAULT_ASPECT_RATIO = ASPECT_RATIOS["tall"]


def _choice(value: str, choices: tuple[str, ...], name: str) -> str:
    normal = value.strip().lower().replace("-", "_").replace(" ", "_")
    if normal not in choices:
        raise SettingError(f"{setting(name)}: {value!r} is not one of {', '.join(choices)}")
    return normal


def parse_aspect_ratio(value: str | float | int) -> float:
    """A name (tall, square, ...), a number (0.75) or a ratio (3:4, 832x1216) as width / height."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ratio = float(value)
    else:
        text = str(value).strip().lower().replace("-", "_")
        if text in ASPECT_RATIOS:
            return ASPECT_RATIOS[text]
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
    seed: int | None = None  # None: a random seed, reported with the result

    def __post_init__(self):
        checks = {
            "temperature": lambda v: 0 <= v <= 100,
            "top_p": lambda v: 0 < v <= 1,
            "top_k": lambda v: v >= 0,
            "min_p": lambda v: 0 <= v < 1,
            "max_new_tokens": lambda v: 1 <= v <= 4096,
            "seed": lambda v: 0 <= v < 2**32,
        }
        limits = {
            "temperature": "between 0 and 100",
            "top_p": "in (0, 1]",
            "top_k": "0 or more",
            "min_p": "in [0, 1)",
            "max_new_tokens": "between 1 and 4096",
            "seed": "between 0 and 2**32 - 1",
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if value is None:
                continue
            kind = int if name in ("top_k", "max_new_tokens", "seed") else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
                raise SettingError(f"{setting(name)}: {value!r} is not {'an integer' if kind is int else 'a number'}")
            if not (math.isfinite(value) and ok(value)):
                raise SettingError(f"{setting(name)}: {value} must be {limits[name]}")

    def with_defaults(self, defaults: Sampling) -> Sampling:
        """These settings with every unset value taken from `defaults`."""
        return replace(self, **{f.name: getattr(defaults, f.name) for f in fields(self) if getattr(self, f.name) is None})


@dataclass(frozen=True)
class Request:
    """One prompt to generate from. Tags are kept as given; `dtg_cli.tags.clean` tidies them."""

    tags: tuple[str, ...] = ()
    copyright: tuple[str, ...] = ()
    character: tuple[str, ...] = ()
    artist: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    rating: str | None = None
    aspect_ratio: float | None = None  # width / height
    length: str | None = None
    identity: str | None = None
    ban: tuple[str, ...] = ()
    num: int = 1
    auto: bool = True  # sort a flat tag list into the prompt's fields by the tag database (--no-auto)
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self):
        if self.rating is not None:
            object.__setattr__(self, "rating", _choice(self.rating, RATINGS, "rating"))
        if self.length is not None:
            object.__setattr__(self, "length", _choice(self.length, LENGTHS, "length"))
        if self.identity is not None:
            object.__setattr__(self, "identity", _choice(self.identity, IDENTITIES, "identity"))
        if self.aspect_ratio is not None:
            object.__setattr__(self, "aspect_ratio", parse_aspect_ratio(self.aspect_ratio))
        if not isinstance(self.auto, bool):
            raise SettingError(f"{setting('auto')}: {self.auto!r} must be true or false")
        if isinstance(self.num, bool) or not isinstance(self.num, int) or not 1 <= self.num <= 1000:
            raise SettingError(f"{setting('num')}: {self.num!r} must be an integer between 1 and 1000")
        compile_bans(self.ban)  # a bad pattern is an error now, not after the model has loaded

    def conditions(self) -> list[str]:
        """The option names of the conditions this request sets (to check them against a prompt format)."""
        names = ["copyright", "character", "artist", "quality", "rating", "aspect_ratio", "length", "identity"]
        return [n for n in names if getattr(self, n) not in (None, ())]

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
        if (width is None) != (height is None):
            raise SettingError(f"{setting('width')} and {setting('height')} go together")
        if width is not None:
            if aspect_ratio is not None:
                raise SettingError(f"give {setting('aspect_ratio')} or {setting('width')}/{setting('height')}, not both")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise SettingError(f"{setting('width')}/{setting('height')}: {width}x{height} must be positive integers")
            aspect_ratio = width / height
        values: dict[str, Any] = {}
        for name in ("copyright", "character", "artist", "quality", "ban"):
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
        unknown = set(conditions) - {"rating", "length", "identity", "num", "auto"}
        if unknown:
            raise UsageError(f"unknown setting {', '.join(sorted(unknown))}")
        return cls(
            tags=tuple(split_tags(tags)),
            aspect_ratio=aspect_ratio,
            sampling=sampling or Sampling(),
            **values,
            **{k: v for k, v in conditions.items() if v is not None},
        )
