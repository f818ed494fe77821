"""Tags as users write them and as dtg hands them on: splitting, banning, escaping, and reading a prompt.

`read` turns a request's raw tag text (web-UI syntax and all) into what the model is given and a
`Layout` of what the user wrote; `render` writes a result back in the user's syntax, in the order and
form asked for. Categories come from the bundled danbooru database (`dtg_cli.tagdb`), plus three kinds
it does not hold: people counts (1girl, 2boys, no humans), rating words and quality words.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dtg_cli.errors import SettingError, UsageError, setting
from dtg_cli.syntax import Piece, parse

log = logging.getLogger("dtg")

# `dtg_cli.tagdb` (numpy and the bundled database) is imported inside the functions that use it: the CLI
# imports this module to build its --help, which must not pay for either.

if TYPE_CHECKING:
    from dtg_cli.settings import Request  # settings builds on this module

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


# --- what a tag is ----------------------------------------------------------------------------------

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
ORDERS = ("model", "alpha", "category")

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


# --- reading a prompt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One piece of the user's prompt as dtg writes it back: a tag (canonical, with its emphasis and
    category) or a network, BREAK or prompt-editing group, exactly as written."""

    piece: Piece
    known: Known | None = None  # for tags

    @property
    def is_tag(self) -> bool:
        return self.piece.kind == "tag"


@dataclass
class Layout:
    """Everything the user wrote, for `render`: tags from --character/--copyright/--artist/--quality
    first, then the prompt's pieces in the user's order."""

    fixed: list[Item] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    webui: bool = False  # the prompt used web-UI syntax, so output is escaped unless told otherwise

    def tags(self) -> list[Known]:
        return [i.known for i in [*self.fixed, *self.items] if i.is_tag]


@dataclass
class Reading:
    request: Request  # what the model is given: canonical tags, each in its field
    layout: Layout
    unknown: list[Known]  # tags given to the model that it cannot read as tags: for a vocabulary (Dart),
    # those outside it (each an <|unk|> token); otherwise those the database does not hold
    outside: list[Known]  # tags kept in the output only (meta, artists for Dart, extra rating words...)


def check_tags(text: str, vocabulary: Collection[str] | None = None) -> list[dict]:
    """What `dtg tags check` shows for each tag of a prompt (web-UI syntax welcome): `input` (as written),
    `tag` (canonical), `category`, `posts`, `alias`, `unknown` (to the database), `model_knows` (None without
    a one-token-per-tag `vocabulary`, and for rating and quality words, which are conditions) and
    `suggestions` for a tag that is unknown either way. Raises UsageError when the text holds no tag."""
    from dtg_cli.tagdb import database

    pieces, _ = parse(text)
    inputs = [p for p in pieces if p.kind == "tag"]
    if not inputs:
        what = "only " + ", ".join(sorted({p.kind + "s" for p in pieces})) if pieces else "nothing"
        raise UsageError(f"no tags to check: the input holds {what}")
    allowed = vocabulary.__contains__ if vocabulary is not None else None
    rows = []
    for piece in inputs:
        known = identify(piece.text)
        condition = known.category in ("rating", "quality")  # prompt conditions, not vocabulary tags
        in_model = None if vocabulary is None or condition else model_form(known.name, vocabulary) in vocabulary
        problem = known.unknown or in_model is False
        rows.append({
            "input": piece.wrapped(),
            "tag": known.name,
            "category": known.category,
            "posts": known.count,
            "alias": known.alias,
            "unknown": known.unknown,
            "model_knows": in_model,
            "suggestions": database().suggest(known.name, allowed=allowed) if problem else [],
        })  # fmt: skip
    return rows


class UnknownTags:
    """Input tags a model cannot read as tags (`Reading.unknown`), counted over a run. With `warn`, each one
    is warned about once, with suggestions; `summary` says what a run without warnings met."""

    def __init__(self, model_name: str, vocabulary: Collection[str] | None):
        self.model_name = model_name
        self.vocabulary = vocabulary  # a one-token-per-tag model's tags; None for a model that reads any text
        self.warn = True
        self.counts: dict[str, int] = {}

    def note(self, unknown: Iterable[Known]) -> None:
        from dtg_cli.tagdb import database

        for known in unknown:
            key = known.name.lower()
            seen = key in self.counts
            self.counts[key] = self.counts.get(key, 0) + 1
            if not self.warn or seen:
                continue
            if self.vocabulary is None:
                what = f"unknown tag {known.written!r}: not in the danbooru tag database (the model reads it as plain text)"
            elif known.count is None:
                what = (
                    f"unknown tag {known.written!r}: not in the danbooru tag database nor in {self.model_name}'s vocabulary, "
                    "so the model sees <|unk|>"
                )
            else:
                what = f"{known.name!r} is a danbooru {known.category} tag, but not in {self.model_name}'s vocabulary, so the model sees <|unk|>"
            near = database().suggest(known.name, allowed=self._in_vocabulary if self.vocabulary is not None else None)
            log.warning(what + (f"; did you mean: {', '.join(near)}" if near else ""))

    def _in_vocabulary(self, tag: str) -> bool:
        return tag.lower() in self.vocabulary

    def summary(self) -> str | None:
        """One line on the unknown tags met (the five most frequent), or None when there were none."""
        if not self.counts:
            return None
        common = sorted(self.counts.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{tag!r} ({n}x)" for tag, n in common)
        what = (
            f"are not in {self.model_name}'s vocabulary, so the model saw <|unk|> for them"
            if self.vocabulary is not None
            else "are not in the danbooru tag database"
        )
        return f"{len(self.counts)} distinct input tags {what}; most frequent: {listed} (-v names each with suggestions)"


def _flag_tags(flag: str, values: Iterable[str]) -> list[str]:

    try:
        pieces, _ = parse(", ".join(values))
    except UsageError as e:
        raise SettingError(str(e).replace("tags:", f"{setting(flag)}:", 1)) from None
    return [p.text for p in pieces if p.kind == "tag"]


def read(request: Request, accepts: Collection[str], vocabulary: Collection[str] | None = None) -> Reading:
    """Parse, normalise, de-duplicate and (unless `request.auto` is off) categorise a request's tags.

    With `auto`, each tag of the list goes to its prompt field: characters, copyrights and (where the
    model takes them) artists to theirs, a rating word to the rating, quality words to the quality line
    (DanTagGen delta), people counts and general tags to the general field. Meta tags, and whatever the
    model has no field for, stay in the output only. A field set by its flag is not filled from the
    list: the list's tags of that category are then given as general tags (a rating or quality word is
    kept in the output only). `vocabulary` (Dart) picks the spelling the model knows.
    """

    pieces, webui = parse(", ".join(request.tags))
    layout = Layout(webui=webui)
    seen: set[str] = set()
    fields: dict[str, list[str]] = {f: [] for f in ("general", "character", "copyright", "artist", "quality", "meta")}
    outside: list[Known] = []
    unknown: list[Known] = []

    def give(field_name: str, known: Known) -> None:
        form = model_form(known.name, vocabulary)
        fields[field_name].append(form)
        if field_name not in ("quality", "meta") and (form.lower() not in vocabulary if vocabulary is not None else known.unknown):
            unknown.append(known)

    for flag in ("character", "copyright", "artist", "quality", "meta"):
        for tag in _flag_tags(flag, getattr(request, flag)):
            known = identify(tag)
            if known.name.lower() not in seen:
                seen.add(known.name.lower())
                layout.fixed.append(Item(Piece("tag", known.name), known))
                give(flag, known)
    rating = request.rating
    for piece in pieces:
        if piece.kind != "tag":
            layout.items.append(Item(piece))
            continue
        known = identify(piece.text)
        if known.name.lower() in seen:
            continue  # a repeat: the first one stays
        seen.add(known.name.lower())
        layout.items.append(Item(replace(piece, text=known.name), known))
        category = known.category if request.auto else "general"
        if category in ("people", "general"):
            give("general", known)
        elif category in ("character", "copyright", "artist"):
            if getattr(request, category):  # set by its flag, which wins
                give("general", known)
            elif category in accepts:
                give(category, known)
            else:
                outside.append(known)
        elif category == "rating" and rating is None:
            rating = RATING_WORDS[known.name]  # a rating word's name is its key
        elif category in ("quality", "meta") and category in accepts and not getattr(request, category):
            fields[category].append(known.name)
        else:
            outside.append(known)
    model_request = replace(
        request,
        tags=tuple(fields["general"]),
        rating=rating,
        **{f: tuple(fields[f]) for f in ("character", "copyright", "artist", "quality", "meta")},
    )
    return Reading(model_request, layout, unknown, outside)


def model_form(name: str, vocabulary: Collection[str] | None) -> str:
    """How a vocabulary (Dart's) spells a tag: as dtg writes it, or with underscores and spaces swapped."""
    if vocabulary is None or name in vocabulary:
        return name
    other = name.replace(" ", "_") if " " in name else name.replace("_", " ")
    return other if other in vocabulary else name


# --- writing a result back --------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How results are written: tag order, category template, escaping (None: when the prompt used
    web-UI syntax) and underscores."""

    order: str = "model"
    template: tuple[str, ...] = DEFAULT_TEMPLATE
    escape: bool | None = None
    underscores: bool = False

    def __post_init__(self):
        if self.order not in ORDERS:
            raise UsageError(f"--order: {self.order!r} is not one of {', '.join(ORDERS)}")

    def tag(self, name: str, layout: Layout) -> str:
        if self.underscores:
            name = name.replace(" ", "_")
        if self.escape if self.escape is not None else layout.webui:
            name = escape(name)
        return name


def render(layout: Layout, new_tags: Iterable[str], style: Style = Style(), nl: str | None = None) -> tuple[str, list[str]]:
    """A result as one line in the user's syntax, and its tags in that order (escaped and underscored as
    the style says, without emphasis). A caption (`nl`) ends the line, or takes the place of `nl` in the
    template with order `category`.

    Emphasis stays on its tag, and networks, BREAK and prompt-editing groups stay where they were. New
    tags join the last BREAK section: after its last tag (order `model`), or sorted in with the others
    (`alpha`, `category`). In a sorted section the tags come first, then its networks. With `category`,
    a category the template leaves out is left out of the output.
    """
    from dtg_cli.tagdb import key

    new = [Item(Piece("tag", t), replace(identify(t), name=t)) for t in new_tags]  # as the model wrote them
    sections: list[list[Item]] = [[*layout.fixed]]
    breaks: list[Item] = []
    for item in layout.items:
        if item.piece.kind == "break":
            breaks.append(item)
            sections.append([])
        else:
            sections[-1].append(item)
    last = sections[-1]
    placed = nl is not None and style.order == "category" and "nl" in style.template
    if placed:
        new.append(Item(Piece("caption", nl), replace(identify("caption"), category="nl")))
    if style.order == "model":
        at = max((i + 1 for i, item in enumerate(last) if item.is_tag), default=0)
        last[at:at] = new
    else:
        last.extend(new)
        for n, section in enumerate(sections):
            tags = [i for i in section if i.is_tag]
            if style.order == "alpha":
                tags.sort(key=lambda i: key(i.known.name))
            else:
                rank = {c: r for r, c in enumerate(style.template)}
                tags = sorted((i for i in [*tags, *_captions(section)] if i.known.category in rank), key=lambda i: rank[i.known.category])
            sections[n] = tags + [i for i in section if not i.is_tag and i.piece.kind != "caption"]
    parts: list[str] = []
    names: list[str] = []
    for n, section in enumerate(sections):
        if n:
            parts.append(breaks[n - 1].piece.text)
        for item in section:
            if item.is_tag:
                name = style.tag(item.known.name, layout)
                names.append(name)
                parts.append(item.piece.wrapped(name))
            else:
                parts.append(item.piece.text)
    if nl and not placed:
        parts.append(nl)
    return ", ".join(parts), names


def _captions(section: list[Item]) -> list[Item]:
    return [i for i in section if i.piece.kind == "caption"]


def stream_parts(layout: Layout, style: Style) -> tuple[str, str]:
    """For showing a result while it is written (order `model` only): the text before the new tags and
    the text after them."""
    head, _ = render(layout, ["\x00"], style)  # a marker where the new tags go
    before, _, after = head.partition("\x00")
    return before.removesuffix(", "), after.removeprefix(", ")
