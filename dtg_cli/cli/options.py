"""Options shared by several commands, declared once as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

import typer

# Options shared by several commands, declared once.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also show llama.cpp's own log lines and details.")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, max=512, help="CPU threads (default: all cores; at most 512).")]
Parallel = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        max=255,
        help="Sequences decoded together in one batch (default: 128 on a CPU, 255 with layers on a GPU, fewer "
        "where their KV cache would pass an eighth of the machine's memory, 4 GiB at most; dtg generate: at most "
        "the number of results). Any value of 2 or more gives the same results with Q8_0 and F16 models on a CPU.",
        rich_help_panel="Model",
    ),
]


_SAMPLING = "Sampling (defaults per model family)"
_CONDITIONS = "Conditions"
_MODEL = "Model"
_OUTPUT = "Output"


def _family_default(name: str) -> str:
    from dtg_cli.families import FAMILIES

    values = {family.name: getattr(family.sampling, name) for family in FAMILIES}
    if len(set(values.values())) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{family} {value}" for family, value in values.items())


def _format_names() -> str:
    from dtg_cli.families import formats

    return ", ".join(formats())


# Options of the commands that generate (generate, batch), declared once.
ModelName = Annotated[str, typer.Option("--model", "-m", help="A model name (dtg models list) or a .gguf file.", rich_help_panel=_MODEL)]
Quant = Annotated[str, typer.Option("--quant", "-q", help="f16, q8_0 or q6_k.", rich_help_panel=_MODEL)]
PromptFormat = Annotated[
    str | None,
    typer.Option(
        help=f"Prompt format for a .gguf file dtg cannot identify: {_format_names()}.",
        rich_help_panel=_MODEL,
    ),
]
GpuLayers = Annotated[int, typer.Option(help="Layers to offload to the GPU (-1: all; ignored by CPU-only builds).", rich_help_panel=_MODEL)]
Copyright = Annotated[str | None, typer.Option(help="Copyright tags (comma-separated).", rich_help_panel=_CONDITIONS)]
Character = Annotated[str | None, typer.Option(help="Character tags (comma-separated).", rich_help_panel=_CONDITIONS)]
Artist = Annotated[str | None, typer.Option(help="Artist tags (DanTagGen).", rich_help_panel=_CONDITIONS)]
Rating = Annotated[
    str | None, typer.Option(help="sfw, general, sensitive, nsfw, questionable or explicit (default: sfw).", rich_help_panel=_CONDITIONS)
]
AspectRatio = Annotated[
    str | None,
    typer.Option(
        help="ultra_tall, tall, square, wide, ultra_wide, a number (width/height) or W:H (default: tall).", rich_help_panel=_CONDITIONS
    ),
]
Width = Annotated[int | None, typer.Option(help="Image width; with --height, instead of --aspect-ratio.", rich_help_panel=_CONDITIONS)]
Height = Annotated[int | None, typer.Option(help="Image height.", rich_help_panel=_CONDITIONS)]
Length = Annotated[
    str | None, typer.Option(help="very_short, short, medium, long or very_long (default: long).", rich_help_panel=_CONDITIONS)
]
Identity = Annotated[
    str | None,
    typer.Option(help="Dart SFT: none, lax or strict, how closely to keep the given subjects (default: lax).", rich_help_panel=_CONDITIONS),
]
Quality = Annotated[str | None, typer.Option(help="DanTagGen delta: quality tags, e.g. masterpiece.", rich_help_panel=_CONDITIONS)]
Temperature = Annotated[
    float | None, typer.Option(help=f"0 is greedy (default: {_family_default('temperature')}).", rich_help_panel=_SAMPLING)
]
TopP = Annotated[
    float | None, typer.Option(help=f"Nucleus sampling, 1 is off (default: {_family_default('top_p')}).", rich_help_panel=_SAMPLING)
]
TopK = Annotated[
    int | None,
    typer.Option(help=f"Keep the k likeliest tokens, 0 is off (default: {_family_default('top_k')}).", rich_help_panel=_SAMPLING),
]
MinP = Annotated[
    float | None,
    typer.Option(
        help=f"Drop tokens below this fraction of the likeliest, 0 is off (default: {_family_default('min_p')}).", rich_help_panel=_SAMPLING
    ),
]
MaxNewTokens = Annotated[
    int | None, typer.Option(help=f"Token budget per result (default: {_family_default('max_new_tokens')}).", rich_help_panel=_SAMPLING)
]
Ban = Annotated[
    list[str] | None,
    typer.Option(help="A tag that must not appear: a glob such as '*hair*' or re:REGEX. Repeatable.", rich_help_panel=_SAMPLING),
]
EscapeTags = Annotated[
    bool | None,
    typer.Option(
        "--escape/--no-escape",
        help="Write ( and ) in tags as \\( and \\) for web UIs (default: when the prompt uses web-UI syntax).",
        rich_help_panel=_OUTPUT,
    ),
]
Order = Annotated[
    str | None,
    typer.Option(
        help="model (your tags where you wrote them, then the new ones), alpha, or category (by --template).", rich_help_panel=_OUTPUT
    ),
]
Template = Annotated[
    str | None,
    typer.Option(
        help="Categories in output order, for --order category (implied): people, character, copyright, artist, general, meta, rating, "
        "quality (the default); one left out is left out of the output.",
        rich_help_panel=_OUTPUT,
    ),
]
Underscores = Annotated[
    bool,
    typer.Option("--underscores", help="Write tags with underscores (long_hair), for models trained on them.", rich_help_panel=_OUTPUT),
]
Auto = Annotated[
    bool | None,
    typer.Option(
        "--auto/--no-auto",
        help="Sort a flat tag list into the prompt's fields (character, copyright, artist, rating, quality, general) by the tag "
        "database (default: on); a field's own flag wins.",
        rich_help_panel=_CONDITIONS,
    ),
]


def _style(order: str | None, template: str | None, escape_tags: bool | None, underscores: bool):
    from dtg_cli.tags import DEFAULT_TEMPLATE, Style, parse_template

    return Style(
        order=order or ("category" if template else "model"),
        template=parse_template(template) if template is not None else DEFAULT_TEMPLATE,
        escape=escape_tags,
        underscores=underscores,
    )
