"""Prompts as image-generation web UIs write them, split into the tags dtg reads and the rest it keeps.

    hatsune_miku, (masterpiece:1.2), ((cat ears)), [smile], ganyu \\(genshin impact\\), <lora:style:0.8>, BREAK, solo

becomes a list of pieces: tags with their emphasis (`(x:1.2)`, `((x))`, `[x]`, kept outermost first),
networks (`<lora:...>`, `<lyco:...>`, any `<name:...>`), BREAK / AND separators, and prompt-editing
groups (`[a:b:0.5]`, `[a|b]`), which are kept as they are. Rules:

- A comma or a line break ends a tag, inside brackets too: `(red hair, blue eyes:1.2)` is two tags, and
  each is written back with its own emphasis, `(red hair:1.2), (blue eyes:1.2)`.
- A bracket opens emphasis only where a tag starts. Inside a tag, parentheses are part of it, so
  `ganyu (genshin impact)` is one tag whether or not its parentheses are escaped.
- `(:3)` is the tag `:3` with emphasis: a weight needs text before its colon (and `(:1.2)` is an error).
- A kaomoji (a tag of symbols only) keeps its brackets: `;)`, `>:(`.
- Other unbalanced brackets and empty groups are errors, not guesses.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, replace

from dtg_cli.errors import UsageError

_NETWORK = re.compile(r"<[A-Za-z][\w-]*:[^<>]*>")
_SEPARATOR = re.compile(r"\b(BREAK|AND)\b")
_WEIGHT = re.compile(r"^(.*?)\s*:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$", re.DOTALL)
_CLOSE = {"(": ")", "[": "]"}

# What one prompt may hold. Every context dtg runs takes at most 2048 tokens, about 10,000 characters of
# tags; the bounds keep a pasted file or a runaway generator from costing more than a moment to read.
MAX_PROMPT_CHARS = 65536
MAX_NESTING = 32  # the web UI's emphasis stacks ((( ))) a few deep


@dataclass(frozen=True)
class Emphasis:
    bracket: str  # "(" or "["
    weight: str | None = None  # as written, "1.2"

    def wrap(self, text: str) -> str:
        if self.weight is not None:
            return f"({text}:{self.weight})"
        return f"{self.bracket}{text}{_CLOSE[self.bracket]}"


@dataclass(frozen=True)
class Piece:
    kind: str  # "tag", "network", "break" or "literal" (a prompt-editing group)
    text: str  # a tag without its emphasis and escapes; anything else exactly as written
    emphasis: tuple[Emphasis, ...] = ()  # outermost first

    def wrapped(self, text: str | None = None) -> str:
        text = self.text if text is None else text
        for e in reversed(self.emphasis):
            text = e.wrap(text)
        return text


@dataclass
class _Group:
    bracket: str
    first: int  # index of the first piece inside
    at: int  # position of the bracket in the text


def parse(text: str) -> tuple[list[Piece], bool]:
    """The pieces of a prompt, and whether it used any web-UI syntax (emphasis, escapes, networks, BREAK).
    Raises UsageError for unbalanced brackets, empty groups and text past MAX_PROMPT_CHARS or MAX_NESTING.
    Time is linear in the length of the text."""
    if len(text) > MAX_PROMPT_CHARS:
        raise UsageError(f"tags: {len(text)} characters; one prompt holds at most {MAX_PROMPT_CHARS}")
    editing_marks = [m.start() for m in re.finditer(r"[:|]", text)]  # where prompt editing could be
    pieces: list[Piece] = []
    stack: list[_Group] = []
    buf: list[str] = []
    literal: list[str] = []  # brackets opened inside the current tag, part of it
    # Whether `buf` holds anything but white space, and any letter or digit: kept as characters arrive, so
    # that each character costs the same however long the tag (a rescan per character was quadratic).
    seen = {"text": False, "alnum": False}
    webui = False

    def put(c: str) -> None:
        buf.append(c)
        if not seen["text"] and not c.isspace():
            seen["text"] = True
        if not seen["alnum"] and c.isalnum():
            seen["alnum"] = True

    def flush(content: str | None = None) -> None:
        content = "".join(buf) if content is None else content
        buf.clear()
        literal.clear()
        seen["text"] = seen["alnum"] = False
        parts = _SEPARATOR.split(content)
        for i, part in enumerate(parts):
            if i % 2:
                pieces.append(Piece("break", part))
            elif part.split():
                pieces.append(Piece("tag", " ".join(part.split())))

    def where(i: int) -> str:
        return f"at character {i + 1} of {text.strip()!r}" if len(text) <= 80 else f"at character {i + 1}"

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        blank = not seen["text"]
        if c == "\\" and i + 1 < n and text[i + 1] in "()[]\\":
            put(text[i + 1])
            webui = True
            i += 2
            continue
        if c in ",\n":
            flush()
        elif c == "<" and blank and (m := _NETWORK.match(text, i)):
            flush()
            pieces.append(Piece("network", m[0]))
            webui = True
            i = m.end()
            continue
        elif c in "([" and not blank:
            put(c)
            literal.append(c)
        elif c in "([":
            flush()
            if len(stack) == MAX_NESTING:
                raise UsageError(f"tags: brackets nested more than {MAX_NESTING} deep {where(i)}")
            stack.append(_Group(c, len(pieces), i))
            webui = True
        elif c in ")]" and literal and _CLOSE[literal[-1]] == c:
            put(c)
            literal.pop()
        elif c in ")]" and not stack and not blank and not seen["alnum"]:
            put(c)  # a kaomoji, ;) or >:)
        elif c in ")]":
            if not stack or _CLOSE[stack[-1].bracket] != c:
                raise UsageError(f"tags: unbalanced {c!r} {where(i)}")
            group = stack.pop()
            content, weight = "".join(buf), None
            mark = bisect.bisect_right(editing_marks, group.at)
            if c == "]" and mark < len(editing_marks) and editing_marks[mark] < i:
                del pieces[group.first :]  # prompt editing, [from:to:when] or [a|b]: kept as written
                flush("")
                pieces.append(Piece("literal", text[group.at : i + 1]))
                i += 1
                continue
            m = _WEIGHT.match(content) if c == ")" else None
            if m and (m[1].strip() or any(p.kind == "tag" for p in pieces[group.first :])):  # ((a):1.3) too
                content, weight = m[1], m[2]
            elif m and "." in m[2]:
                raise UsageError(f"tags: a weight with no tag {where(group.at)}")
            flush(content)
            inside = pieces[group.first :]
            if not any(p.kind == "tag" for p in inside):
                raise UsageError(f"tags: {group.bracket}{c} with no tag inside {where(group.at)}")
            emphasis = Emphasis(group.bracket, weight)
            pieces[group.first :] = [replace(p, emphasis=(emphasis, *p.emphasis)) if p.kind == "tag" else p for p in inside]
        else:
            put(c)
        i += 1
    flush()
    if stack:
        raise UsageError(f"tags: {stack[-1].bracket!r} is never closed {where(stack[-1].at)}")
    webui = webui or any(p.kind != "tag" for p in pieces)
    return pieces, webui
