"""Reading a prompt: `read` turns a request's raw tag text (web-UI syntax and all) into what the model is
given, each tag in its field, and a `Layout` of what the user wrote; `check_tags` is what `dtg tags check`
shows; `UnknownTags` collects the tags a model cannot read."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from dtg_cli.categories import RATING_WORDS, Known, identify
from dtg_cli.errors import SettingError, UsageError, setting
from dtg_cli.settings import Request
from dtg_cli.syntax import Piece, parse

log = logging.getLogger("dtg")


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
