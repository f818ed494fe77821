"""`dtg tags check` and `dtg tags search`."""

import sys
from typing import Annotated

import typer

from dtg_cli.cli.app import app
from dtg_cli.cli.generate import stdin_lines
from dtg_cli.cli.options import ModelName, Quant
from dtg_cli.cli.ui import err, escape, stdout_console
from dtg_cli.errors import DtgError

tags_app = typer.Typer(help="Look tags up in the bundled danbooru tag database.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")

TABLE_FORMATS = ("table", "json")
TableFormat = Annotated[str, typer.Option("--format", help="table or json.")]


@tags_app.command("check")
def tags_check(
    tags: Annotated[str, typer.Argument(help="Tags as you would give them to generate (web-UI syntax welcome); '-' reads stdin.")],
    model: ModelName = "dart-v2-moe-sft",
    quant: Quant = "q8_0",
    output_format: TableFormat = "table",
) -> None:
    """Each tag of TAGS: its canonical form, category, post count, whether the model knows it, suggestions.

    Exits with 1 when a tag is unknown to the database or to the model's vocabulary. Only a model
    already on disk is checked against; nothing is downloaded.
    """

    from dtg_cli.output import check_kind, json_text
    from dtg_cli.quants import parse_quant
    from dtg_cli.reading import check_tags
    from dtg_cli.store import tag_vocabulary

    output_format = check_kind(output_format, TABLE_FORMATS)
    if tags == "-":
        lines = list(stdin_lines())
        if bad := next((line for line in lines if isinstance(line, DtgError)), None):
            raise bad
        text = "\n".join(lines)
    else:
        text = tags
    name, vocabulary, why = tag_vocabulary(model, parse_quant(quant))
    if why:
        err.print(f"[yellow]note:[/] {escape(why)}", soft_wrap=True)
    rows = check_tags(text, vocabulary)
    if output_format == "json":
        sys.stdout.write(json_text({"model": name, "tags": rows}, indent=2) + "\n")
    else:
        from rich.table import Table

        table = Table(title=f"tags for {name}", title_justify="left")
        for column in ("input", "tag", "category", "posts", "in model", "suggestions"):
            table.add_column(column, justify="right" if column == "posts" else "left")
        for r in rows:
            knows = {None: "-", True: "yes", False: "[red]no[/]"}[r["model_knows"]]
            tag = escape(r["tag"]) if not r["unknown"] else f"[red]{escape(r['tag'])}[/] (unknown)"
            posts = f"{r['posts']:,}" if r["posts"] is not None else ""
            table.add_row(escape(r["input"]), tag, r["category"], posts, knows, escape(", ".join(r["suggestions"])))
        stdout_console().print(table)
    if any(r["unknown"] or r["model_knows"] is False for r in rows):
        raise typer.Exit(1)


@tags_app.command("search")
def tags_search(
    pattern: Annotated[str, typer.Argument(help='A prefix ("cat") or a glob ("*hair*", "cat?ears"); underscores and spaces match alike.')],
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many tags to show.")] = 20,
    category: Annotated[str | None, typer.Option(help="Only general, artist, copyright, character or meta tags.")] = None,
    output_format: TableFormat = "table",
) -> None:
    """The most used danbooru tags matching PATTERN, with their category and post count.

    Exits with 1 when none matches.
    """

    from dtg_cli.errors import UsageError
    from dtg_cli.output import check_kind, json_text
    from dtg_cli.tagdb import DANBOORU_CATEGORIES, database, key

    output_format = check_kind(output_format, TABLE_FORMATS)
    if not key(pattern):
        raise UsageError("the pattern is empty (use '*' for every tag)")
    if limit < 1:
        raise UsageError(f"--limit: {limit} must be 1 or more")
    if category is not None and category not in DANBOORU_CATEGORIES.values():
        raise UsageError(f"--category: {category!r} is not one of {', '.join(DANBOORU_CATEGORIES.values())}")
    found = database().search(pattern, limit=limit, category=category)
    if output_format == "json":
        sys.stdout.write(json_text([{"tag": t.name, "category": t.category, "posts": t.count} for t in found], indent=2) + "\n")
    elif found:
        from rich.table import Table

        table = Table()
        table.add_column("tag")
        table.add_column("category")
        table.add_column("posts", justify="right")
        for t in found:
            table.add_row(escape(t.name), t.category, f"{t.count:,}")
        stdout_console().print(table)
    if not found:
        err.print(f"no tag matches {escape(repr(pattern))}", soft_wrap=True)
        raise typer.Exit(1)
