"""Writing a result back: `render` gives a result as one line in the user's syntax (emphasis, networks
and BREAK where they were), in the order and form a `Style` asks for; `LineStream` gives that line in
pieces while the result is written (the terminal's live line, the server's streams)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from dtg_cli.categories import DEFAULT_TEMPLATE, identify
from dtg_cli.errors import UsageError
from dtg_cli.reading import Item, Layout
from dtg_cli.syntax import Piece
from dtg_cli.tagtext import escape

ORDERS = ("model", "alpha", "category")


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


def style(order: str | None = None, template: str | None = None, escape: bool | None = None, underscores: bool = False) -> Style:
    """The `Style` of the output options (--order, --template, --escape, --underscores; a request's fields
    of the same names): a template alone implies order `category`."""
    from dtg_cli.categories import parse_template

    return Style(
        order=order or ("category" if template else "model"),
        template=parse_template(template) if template is not None else DEFAULT_TEMPLATE,
        escape=escape,
        underscores=underscores,
    )


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


class LineStream:
    """One result's line as it is written, in pieces that add up to the finished line: the user's tags
    before the new ones, each new tag as it is sampled, the user's text after them, then a caption (TIPO).
    Only order `model` writes a line before its result is finished; for other orders every piece but the
    last (`finish`) is empty."""

    def __init__(self, style: Style):
        self.style = style
        self.layout: Layout | None = None
        self.sent = ""  # what the pieces so far add up to
        self.first = True  # nothing written yet: the next piece has no separator
        self.ended = False  # the text after the new tags is written
        self.captioned = False  # the caption has begun

    @property
    def live(self) -> bool:
        return self.style.order == "model" and self.layout is not None

    def start(self, layout: Layout) -> str:
        self.layout = layout
        if not self.live:
            return ""
        before = stream_parts(layout, self.style)[0]
        self.first = not before
        return self._add(before)

    def tag_parts(self, tag: str) -> tuple[str, str]:
        """A new tag's piece as (separator, the tag as the style writes it), for a caller that shows them apart."""
        if not self.live:
            return "", ""
        separator, shown = ("" if self.first else ", "), self.style.tag(tag, self.layout)
        self.first = False
        self._add(separator + shown)
        return separator, shown

    def tag(self, tag: str) -> str:
        return "".join(self.tag_parts(tag))

    def nl(self, text: str) -> str:
        """More of the caption being written."""
        if not self.live:
            return ""
        piece = ""
        if not self.captioned:
            piece = self.end_tags()
            text = ("" if self.first else ", ") + text
            self.first, self.captioned = False, True
        return piece + self._add(text)

    def end(self, nl: str | None) -> str:
        """What ends the line of a result whose caption is `nl`: the text after the new tags, and the caption
        if none of it was written as it came."""
        if not self.live:
            return ""
        piece = self.end_tags()
        if nl and not self.captioned:
            piece += self._add(("" if self.first else ", ") + nl)
            self.first, self.captioned = False, True
        return piece

    def finish(self, text: str) -> str | None:
        """The rest of the finished line `text` (all of it, for an order other than `model`), or None when
        the pieces so far are not its start (not expected: they are the line's own parts)."""
        if not text.startswith(self.sent):
            return None
        rest, self.sent = text[len(self.sent) :], text
        return rest

    def end_tags(self) -> str:
        """The text the user wrote after the new tags, once."""
        if self.ended:
            return ""
        self.ended = True
        after = stream_parts(self.layout, self.style)[1]
        text = ("" if self.first or not after else ", ") + after
        self.first = self.first and not after
        return self._add(text)

    def _add(self, text: str) -> str:
        self.sent += text
        return text
