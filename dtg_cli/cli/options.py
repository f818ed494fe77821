"""Options shared by several commands, declared once as Annotated aliases."""

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
        "where their KV cache would pass an eighth of the machine's memory, 4 GiB at most; with fewer results "
        "to make, one per result, and in dtg batch at least 2). Any value of 2 or more gives the same results with Q8_0 and F16 models on a CPU.",
        rich_help_panel="Model",
    ),
]


_SAMPLING = "Sampling (defaults per model family)"
_MODEL = "Model"
_OUTPUT = "Output"


# Options of the commands that generate (generate, batch), declared once.
ModelName = Annotated[str, typer.Option("--model", "-m", help="A model name (dtg models list) or a .gguf file.", rich_help_panel=_MODEL)]
Quant = Annotated[str, typer.Option("--quant", "-q", help="f16, q8_0 or q6_k.", rich_help_panel=_MODEL)]
PromptFormat = Annotated[
    str | None,
    typer.Option(
        help="Prompt format for a .gguf file dtg cannot identify: dart-v2-sft, dart-v2-base, tipo, dantaggen, dantaggen-delta.",
        rich_help_panel=_MODEL,
    ),
]
GpuLayers = Annotated[int, typer.Option(help="Layers to offload to the GPU (-1: all; ignored by CPU-only builds).", rich_help_panel=_MODEL)]
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
        "quality (the default); one left out is left out of the output. nl places a TIPO caption (default: at the end).",
        rich_help_panel=_OUTPUT,
    ),
]
Underscores = Annotated[
    bool,
    typer.Option("--underscores", help="Write tags with underscores (long_hair), for models trained on them.", rich_help_panel=_OUTPUT),
]


def _style(order: str | None, template: str | None, escape_tags: bool | None, underscores: bool):
    from dtg_cli.rendering import style

    return style(order, template, escape_tags, underscores)


def _annotation(item):
    """The Typer type and option of one setting of `dtg_cli.settings.SETTINGS`."""
    from dtg_cli.settings import Setting

    assert isinstance(item, Setting)
    kind = {"tags": str, "text": str, "choice": str, "aspect": str, "int": int, "float": float, "bool": bool, "patterns": list[str]}[
        item.kind
    ]
    decls = [f"--{item.name.replace('_', '-')}"]
    if item.kind == "bool":
        decls = [f"{decls[0]}/--no-{item.name.replace('_', '-')}"]
    if item.short:
        decls.append(item.short)
    return Annotated[kind | None, typer.Option(*decls, help=item.help, rich_help_panel=item.panel)]


def with_settings(**helps: str):
    """Give a command an option for every setting of `dtg_cli.settings.SETTINGS` (`helps` rewords some for
    this command); the command receives their values as one dict, `settings`, None where not given."""
    import functools
    import inspect
    from dataclasses import replace

    from dtg_cli.settings import SETTINGS

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        chosen = [replace(item, help=helps[item.name]) if item.name in helps else item for item in SETTINGS if item.option]
        added = [
            inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_annotation(item)) for item in chosen
        ]
        names = [item.name for item in chosen]

        @functools.wraps(command)
        def wrapper(**values):
            return command(settings={name: values.pop(name) for name in names}, **values)

        wrapper.__signature__ = signature.replace(parameters=own + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate
