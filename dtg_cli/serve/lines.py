"""A result's text line as it is written: the pieces that, joined, are the line the finished result gives.

With order `model`, the line is the user's tags before the new ones, each new tag as it is sampled, the
user's text after them, then a caption (TIPO). Other orders sort the whole result, so their line comes in
one piece when the result is finished. The OpenAI streams send these pieces as content deltas, and the
page shows them.
"""

from __future__ import annotations

import logging

from dtg_cli.outcomes import Result
from dtg_cli.reading import Layout
from dtg_cli.rendering import Style, stream_parts

log = logging.getLogger("dtg")


class LineStream:
    """The pieces of one result's line, in order; each call returns the text to add (maybe empty)."""

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

    def tag(self, tag: str) -> str:
        if not self.live:
            return ""
        text = ("" if self.first else ", ") + self.style.tag(tag, self.layout)
        self.first = False
        return self._add(text)

    def nl(self, text: str) -> str:
        if not self.live:
            return ""
        piece = ""
        if not self.captioned:
            piece = self._end_tags()
            text = ("" if self.first else ", ") + text
            self.first, self.captioned = False, True
        return piece + self._add(text)

    def finish(self, result: Result) -> str:
        """The rest of the line of the finished result (all of it, for an order other than `model`)."""
        final = result.written(self.style)["text"]
        if not final.startswith(self.sent):  # not expected: the pieces are the line's own parts
            log.error(f"a streamed line {self.sent!r} is not the start of its result {final!r}")
            return ""
        rest, self.sent = final[len(self.sent) :], final
        return rest

    def _end_tags(self) -> str:
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
