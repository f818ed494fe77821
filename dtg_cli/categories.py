"""What a tag is: its canonical name and category, from the bundled danbooru database (`dtg_cli.tagdb`,
imported by the functions that use it) plus three kinds the database does not hold: people counts (1girl,
2boys, no humans), rating words and quality words; and the `--template` of categories."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dtg_cli.errors import UsageError
from dtg_cli.tagtext import is_special

CATEGORIES = ("people", "character", "copyright", "artist", "general", "meta", "rating", "quality")
DEFAULT_TEMPLATE = CATEGORIES
_CATEGORY_NAMES = {
    **{c: c for c in CATEGORIES},
    "special": "people",
    "characters": "character",
    "copyrights": "copyright",
    "artists": "artist",
    # the caption (TIPO): a template may place it among the categories; by default it ends the line
    "nl": "nl",
    "caption": "nl",
    "generated": "nl",
    "extended": "nl",
}

# Rating words, as written in prompts, and the --rating value each one stands for.
RATING_WORDS = {
    f"{prefix}{word}": rating
    for word, rating in {
        "general": "general",
        "safe": "general",
        "sfw": "sfw",
        "sensitive": "sensitive",
        "questionable": "questionable",
        "nsfw": "nsfw",
        "explicit": "explicit",
    }.items()
    for prefix in ("", "rating:", "rating ")
}
# Quality words of the anime image models (none of them is a danbooru tag), and Pony's score tags.
QUALITY_WORDS = frozenset(
    {"masterpiece", "best quality", "amazing quality", "great quality", "high quality", "good quality", "normal quality", "medium quality",
     "average quality", "low quality", "bad quality", "worst quality", "very aesthetic", "aesthetic", "displeasing", "very displeasing"}
)  # fmt: skip
_SCORE = re.compile(r"^score [1-9](?: up)?$")


@dataclass(frozen=True)
class Known:
    """What dtg knows about one tag."""

    written: str  # as the user wrote it, without emphasis
    name: str  # canonical, as dtg writes it ("long hair" for /lh)
    category: str  # one of CATEGORIES
    count: int | None  # danbooru posts; None when the database does not hold it
    alias: str | None = None  # the alias it was found by

    @property
    def unknown(self) -> bool:
        return self.count is None and self.category not in ("rating", "quality")


def identify(tag: str) -> Known:
    """The canonical name and category of a tag, by name or alias, in any case, with underscores or spaces."""
    from dtg_cli.tagdb import database, key, written_name

    k = key(tag)
    if k in RATING_WORDS:
        return Known(tag, k, "rating", None)
    if k in QUALITY_WORDS or _SCORE.match(k):
        return Known(tag, k.replace(" ", "_") if k.startswith("score") else k, "quality", None)
    entry = database().lookup(k)
    if entry is None:
        name = written_name(" ".join(tag.lower().split()))
        return Known(tag, name, "people" if is_special(name) else "general", None)
    category = "people" if is_special(entry.name) else entry.category
    return Known(tag, entry.name, category, entry.count, entry.alias)


def parse_template(text: str) -> tuple[str, ...]:
    """`--template`: category names in output order, comma-separated (`<|special|>` style names too)."""
    names = []
    for part in text.split(","):
        word = part.strip().strip("<>|").strip().lower()
        if not word:
            continue
        if word not in _CATEGORY_NAMES:
            raise UsageError(f"--template: {part.strip()!r} is not a category ({', '.join(CATEGORIES)}) nor nl (the caption)")
        if _CATEGORY_NAMES[word] in names:
            raise UsageError(f"--template: {_CATEGORY_NAMES[word]} is named twice")
        names.append(_CATEGORY_NAMES[word])
    if not names:
        raise UsageError("--template: name at least one category")
    return tuple(names)
