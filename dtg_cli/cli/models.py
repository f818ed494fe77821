"""`dtg models list`, `pull`, `info` and `rm`."""

from pathlib import Path
from typing import Annotated

import typer

from dtg_cli.cli.app import app
from dtg_cli.cli.options import Verbose
from dtg_cli.cli.ui import StderrProgress, err, setup_logging
from dtg_cli.errors import DtgError
from dtg_cli.tagtext import printable

models_app = typer.Typer(help="List, download, inspect and remove models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Every model dtg knows, and which quantizations of it are on disk."""
    import json

    from dtg_cli.errors import UsageError
    from dtg_cli.registry import registry
    from dtg_cli.store import QUANTS, on_disk

    if output_format not in ("text", "json"):
        raise UsageError(f"--format: {output_format!r} is not one of text, json")
    rows = []
    for entry in registry().values():
        present = [q for q in QUANTS if on_disk(entry, q)]
        rows.append({"name": entry.name, "family": entry.family, "params": entry.params, "license": entry.license,
                     "repo": entry.repo, "on_disk": present})  # fmt: skip
    if output_format == "json":
        print(json.dumps(rows, indent=2))
        return
    header = ("name", "family", "params", "license", "on disk", "repo")
    table = [header] + [
        (
            r["name"],
            r["family"],
            r["params"],
            r["license"] or "see model card",
            ", ".join(q.upper() for q in r["on_disk"]) or "-",
            r["repo"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(printable("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()))


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A model name (dtg models list).")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="Comma-separated: f16, q8_0, q6_k.")] = "q8_0",
    force: Annotated[bool, typer.Option("--force", help="Download (and convert) again even if the file is on disk.")] = False,
    verbose: Verbose = False,
) -> None:
    """Download a model (Dart v2: download and convert to GGUF) and print the file's path."""
    from dtg_cli.quants import parse_quants
    from dtg_cli.registry import lookup
    from dtg_cli.store import pull

    setup_logging(verbose)
    entry = lookup(name)
    quants = parse_quants(quant)
    with StderrProgress() as progress:
        for q in quants:
            print(pull(entry, q, progress, force=force), flush=True)


@models_app.command("info")
def models_info(
    model: Annotated[str, typer.Argument(help="A model name or a .gguf file.")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="Which file of a named model: f16, q8_0, q6_k.")] = "q8_0",
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """What a model's GGUF says: architecture, sizes, vocabulary, quantization, source."""
    import json
    from dataclasses import asdict

    from dtg_cli.errors import UsageError
    from dtg_cli.quants import parse_quant
    from dtg_cli.store import gguf_info, on_disk, resolve

    if output_format not in ("text", "json"):
        raise UsageError(f"--format: {output_format!r} is not one of text, json")
    info: dict = {}
    entry = resolve(model)
    if isinstance(entry, Path):
        info["file"] = gguf_info(entry)
    else:
        info["model"] = {k: v for k, v in asdict(entry).items() if v is not None}
        path = on_disk(entry, parse_quant(quant))
        if path is None:
            info["file"] = f"not on disk (dtg models pull {entry.name} --quant {quant})"
        else:
            info["file"] = gguf_info(path)
    if output_format == "json":
        print(json.dumps(info, indent=2))
        return
    for section, values in info.items():
        if isinstance(values, str):
            print(printable(f"{section}: {values}"))
            continue
        for key, value in values.items():  # a GGUF's metadata is text from anywhere: one line each, no escapes
            print(printable(f"{key}: {_human(key, value)}"))


def _human(key: str, value) -> str:
    if key == "size_bytes":
        return f"{value / 2**20:.1f} MiB"
    if key == "parameters":
        return f"{value / 1e6:.1f}M"
    return str(value)


@models_app.command("rm")
def models_rm(
    name: Annotated[str, typer.Argument(help="A model name (dtg models list).")],
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Only these (comma-separated); default: every quant.")] = None,
) -> None:
    """Delete a model's GGUF files and print their paths."""
    from dtg_cli.quants import parse_quants
    from dtg_cli.registry import lookup
    from dtg_cli.store import QUANTS, remove

    entry = lookup(name)
    removed = remove(entry, tuple(parse_quants(quant)) if quant else QUANTS)
    if not removed:
        raise DtgError(f"no file of {entry.name}{f' ({quant})' if quant else ''} is on disk")
    for path in removed:
        print(path)
    if entry.gguf == "convert":
        err.print(f"the downloaded checkpoint of {entry.repo} stays in the Hugging Face cache (hf cache rm model/{entry.repo})")
