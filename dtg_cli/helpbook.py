"""`--help` pages printed with rich alone, from the renderables Typer built for them when dtg was installed.

Typer's page renderer (`typer.rich_utils`) builds a page from rich renderables (padded text, panels that
hold tables) and prints them on a console it sets up from the environment. The renderables do not depend
on the terminal: its width and colours come in only when the console lays them out and writes them. So
when dtg is built, `setup.py` runs `dtg_cli.cli.pages`, which has Typer build the renderables of every
page and writes them down (`encode`, `dump`) into `helpbook.jsonl` beside this module. A first
`dtg ... --help` then rebuilds them (`decode`) and prints them on a console set up as Typer sets up its
own, without importing Typer: about 40 ms less for a first page on a 2-core AMD EPYC
(`benchmarks/startup_bench.py`). `tests/test_helpbook.py` checks that every page prints byte for byte
as Typer prints it.

The book stands in for Typer only where it prints what Typer would (`_stands_for_typer`): the installed
Typer and rich are the releases that built it, the program runs as the `dtg` script, Typer's words are not
translated (gettext finds no catalogue), and none of the variables Typer reads when it sets up its
console is set. Anywhere else, and for a page or a rich release the book cannot rebuild, Typer renders.

Standard library only at import: `__main__` asks here before the CLI is imported; rich is imported to
print a page.
"""

from __future__ import annotations

import json
import os
import sys

FORMAT = 1
BOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpbook.jsonl")
# What Typer reads from the environment for its help console (typer.rich_utils and typer.core): the
# book's console is Typer's as these leave it unset.
_TYPER_VARIABLES = ("TERMINAL_WIDTH", "GITHUB_ACTIONS", "FORCE_COLOR", "PY_COLORS")
_TYPER_PREFIXES = ("TYPER_", "_TYPER_")
# The environment variables (and prefixes) the book is written without (`setup.py`): those above, click's
# terminal width, and the locale, whose language gettext would translate Typer's words into.
BUILD_LEFT_OUT = (*_TYPER_PREFIXES, *_TYPER_VARIABLES, "COLUMNS", "LANG", "LANGUAGE", "LC_")


class Unsupported(ValueError):
    """A renderable the book cannot write down exactly; its page is left to Typer."""


def installed_version(name: str) -> str | None:
    """The version of the installed distribution `name` (typer, rich), from the name of its .dist-info
    folder beside the package, without importing either (or importlib.metadata); None where it is not one
    such folder."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return None
    try:
        entries = os.listdir(os.path.dirname(os.path.dirname(spec.origin)))
    except OSError:
        return None
    prefix, suffix = f"{name}-", ".dist-info"
    found = [entry[len(prefix) : -len(suffix)] for entry in entries if entry.lower().startswith(prefix) and entry.endswith(suffix)]
    return found[0] if len(found) == 1 else None


def _stands_for_typer(book: dict) -> bool:
    import gettext

    main = sys.modules.get("__main__")
    return (
        sys.platform != "win32"  # a Windows console's set-up is not in the environment
        and sys.stdout is not None
        and book.get("format") == FORMAT
        and book.get("typer") == installed_version("typer")
        and book.get("rich") == installed_version("rich")  # whose defaults the book's renderables were written with
        and getattr(main, "__package__", None) in (None, "")  # click names `python -m dtg_cli` otherwise
        and os.path.basename(sys.argv[0]) == book.get("program")
        and not any(name in os.environ for name in _TYPER_VARIABLES)
        and not any(name.startswith(_TYPER_PREFIXES) for name in os.environ)
        and gettext.find("messages") is None  # the domain Typer's and click's words are translated in
    )


def dump(book: dict, file) -> None:
    """Write a book: a first line that holds all of it but the pages, with the pages' words in order, then
    one line per page, so that a request reads only its own page."""
    head = {**{key: value for key, value in book.items() if key != "pages"}, "pages": list(book["pages"])}
    for value in [head, *book["pages"].items()]:  # a page's line starts with its words
        # json escapes a line end inside a string: one value, one line
        file.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")


def load(path: str) -> dict:
    """A book as `dump` was given it."""
    with open(path, encoding="utf-8") as file:
        head, *pages = [json.loads(line) for line in file.read().split("\n")[:-1]]
    if [words for words, _ in pages] != head["pages"]:
        raise ValueError(f"{path}: the pages are not those its first line names")
    return {**head, "pages": dict(pages)}


def _read_page(path: str, words: str) -> tuple[dict, list | None]:
    """The book's first line, and the page of WORDS (None where the book has none)."""
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    head = json.loads(lines[0])
    if words not in head["pages"]:
        return head, None
    found, page = json.loads(lines[1 + head["pages"].index(words)])
    if found != words:
        raise ValueError(f"{path}: the line of {words!r} holds {found!r}")
    return head, page


def render(words: list[str], book_path: str | None = None) -> str | None:
    """The page `dtg WORDS --help` prints, from the book; None where the book has no such page or would
    not print what Typer prints here."""
    try:
        book, page = _read_page(book_path or BOOK, " ".join(words))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):  # no book (a source checkout), or not one
        return None
    if page is None or not _stands_for_typer(book):
        return None
    try:
        from rich.console import Console

        # Typer's help console where none of _TYPER_VARIABLES is set: colours, terminal and width are rich's own choice.
        console = Console(color_system="auto", force_terminal=None, width=None)
        text = ""
        for entry in page:
            if isinstance(entry, str):  # what click writes itself: the line end after a page
                text += entry
                continue
            renderable, options = entry
            with console.capture() as capture:
                console.print(decode(renderable), **options)
            text += capture.get()
    except Exception:  # a book that another rich release cannot rebuild, or a damaged one: Typer renders
        return None
    return text


# Writing renderables down and reading them back. Every style is written as the style it resolves to on
# the console that would print it, so the book's console needs none of Typer's theme.


def encode_style(value, style) -> str | None:
    """A style as the definition it resolves to (`style(value)` on Typer's console)."""
    if value is None or value == "":
        return value
    resolved = style(value)
    if resolved.meta:
        raise Unsupported(f"a style with meta data: {resolved!r}")
    return str(resolved)


def encode(item, style) -> object:
    """A JSON value for a renderable Typer printed; `style(value)` resolves a style on Typer's console."""
    from rich import box
    from rich.align import Align
    from rich.columns import Columns
    from rich.console import Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def styled(value):
        return encode_style(value, style)

    def box_name(value):
        if value is None:
            return None
        for name in dir(box):
            if getattr(box, name) is value:
                return name
        raise Unsupported(f"a box that rich.box does not name: {value!r}")

    def title(value):  # a title, caption or header: none, markup text or a renderable
        return value if value is None or isinstance(value, str) else encode(value, style)

    if isinstance(item, str):
        if item:  # the console would highlight it with Typer's highlighter
            raise Unsupported(f"a string where a renderable goes: {item!r}")
        return item
    if isinstance(item, Text):
        return {
            "kind": "Text",
            "text": item.plain,
            "style": styled(item.style),
            "justify": item.justify,
            "overflow": item.overflow,
            "no_wrap": item.no_wrap,
            "end": item.end,
            "tab_size": item.tab_size,
            "spans": [[span.start, span.end, styled(span.style)] for span in item.spans],
        }
    if isinstance(item, Padding):
        return {
            "kind": "Padding",
            "renderable": encode(item.renderable, style),
            "pad": [item.top, item.right, item.bottom, item.left],
            "style": styled(item.style),
            "expand": item.expand,
        }
    if isinstance(item, Align):
        return {
            "kind": "Align",
            "renderable": encode(item.renderable, style),
            "align": item.align,
            "style": styled(item.style),
            "vertical": item.vertical,
            "pad": item.pad,
            "width": item.width,
            "height": item.height,
        }
    if isinstance(item, Group):
        return {"kind": "Group", "renderables": [encode(inner, style) for inner in item.renderables], "fit": item.fit}
    if isinstance(item, Columns):
        return {
            "kind": "Columns",
            "renderables": [encode(inner, style) for inner in item.renderables],
            "padding": list(item.padding) if isinstance(item.padding, tuple) else item.padding,
            "width": item.width,
            "expand": item.expand,
            "equal": item.equal,
            "column_first": item.column_first,
            "right_to_left": item.right_to_left,
            "align": item.align,
            "title": title(item.title),
        }
    if isinstance(item, Panel):
        return {
            "kind": "Panel",
            "renderable": encode(item.renderable, style),
            "box": box_name(item.box),
            "title": title(item.title),
            "title_align": item.title_align,
            "subtitle": title(item.subtitle),
            "subtitle_align": item.subtitle_align,
            "safe_box": item.safe_box,
            "expand": item.expand,
            "style": styled(item.style),
            "border_style": styled(item.border_style),
            "width": item.width,
            "height": item.height,
            "padding": list(item.padding) if isinstance(item.padding, tuple) else item.padding,
            "highlight": item.highlight,
        }
    if isinstance(item, Table):
        columns = [list(column.cells) for column in item.columns]
        return {
            "kind": "Table",
            "title": title(item.title),
            "caption": title(item.caption),
            "width": item.width,
            "min_width": item.min_width,
            "box": box_name(item.box),
            "safe_box": item.safe_box,
            "padding": list(item.padding),
            "collapse_padding": item.collapse_padding,
            "pad_edge": item.pad_edge,
            "expand": item.expand,
            "show_header": item.show_header,
            "show_footer": item.show_footer,
            "show_edge": item.show_edge,
            "show_lines": item.show_lines,
            "leading": item.leading,
            "style": styled(item.style),
            "row_styles": [styled(value) for value in item.row_styles],
            "header_style": styled(item.header_style),
            "footer_style": styled(item.footer_style),
            "border_style": styled(item.border_style),
            "title_style": styled(item.title_style),
            "caption_style": styled(item.caption_style),
            "title_justify": item.title_justify,
            "caption_justify": item.caption_justify,
            "highlight": item.highlight,
            "columns": [
                {
                    "header": title(column.header),
                    "footer": title(column.footer),
                    "header_style": styled(column.header_style),
                    "footer_style": styled(column.footer_style),
                    "style": styled(column.style),
                    "justify": column.justify,
                    "vertical": column.vertical,
                    "overflow": column.overflow,
                    "width": column.width,
                    "min_width": column.min_width,
                    "max_width": column.max_width,
                    "ratio": column.ratio,
                    "no_wrap": column.no_wrap,
                    "highlight": column.highlight,
                }
                for column in item.columns
            ],
            "rows": [
                {"style": styled(row.style), "end_section": row.end_section, "cells": [encode(cells[index], style) for cells in columns]}
                for index, row in enumerate(item.rows)
            ],
        }
    raise Unsupported(f"a renderable the book does not write down: {type(item).__name__}")


def _tuple(value):
    """A padding as rich was given it: JSON writes tuples as lists."""
    return tuple(value) if isinstance(value, list) else value


def decode(value):
    """The renderable `encode` wrote down (a title left out: None)."""
    if value is None or isinstance(value, str):
        return value
    fields = dict(value)
    kind = fields.pop("kind")
    if kind == "Text":
        from rich.text import Span, Text

        spans = [Span(start, end, style) for start, end, style in fields.pop("spans")]
        return Text(fields.pop("text"), spans=spans, **fields)
    if kind == "Padding":
        from rich.padding import Padding

        return Padding(decode(fields.pop("renderable")), _tuple(fields.pop("pad")), **fields)
    if kind == "Align":
        from rich.align import Align

        return Align(decode(fields.pop("renderable")), **fields)
    if kind == "Group":
        from rich.console import Group

        return Group(*[decode(inner) for inner in fields.pop("renderables")], **fields)
    if kind == "Columns":
        from rich.columns import Columns

        return Columns(
            [decode(inner) for inner in fields.pop("renderables")],
            padding=_tuple(fields.pop("padding")),
            title=decode(fields.pop("title")),
            **fields,
        )
    if kind == "Panel":
        from rich import box
        from rich.panel import Panel

        return Panel(
            decode(fields.pop("renderable")),
            box=getattr(box, fields.pop("box")),
            padding=_tuple(fields.pop("padding")),
            title=decode(fields.pop("title")),
            subtitle=decode(fields.pop("subtitle")),
            **fields,
        )
    if kind == "Table":
        from rich import box
        from rich.table import Table

        columns = fields.pop("columns")
        rows = fields.pop("rows")
        box_name = fields.pop("box")
        for field in ("title", "caption"):
            fields[field] = decode(fields[field])
        table = Table(box=None if box_name is None else getattr(box, box_name), **{**fields, "padding": _tuple(fields["padding"])})
        for column in columns:
            header, footer = decode(column["header"]), decode(column["footer"])
            table.add_column(header, footer, **{key: value for key, value in column.items() if key not in ("header", "footer")})
        for row in rows:
            table.add_row(*[decode(cell) for cell in row["cells"]], style=row["style"], end_section=row["end_section"])
        return table
    raise ValueError(f"not a renderable the book writes down: {kind}")
