"""`dtg generate`."""

import logging
import sys
from typing import Annotated

import typer

from dtg_cli.cli.app import app
from dtg_cli.cli.options import (
    _OUTPUT,
    EscapeTags,
    GpuLayers,
    ModelName,
    Order,
    Parallel,
    PromptFormat,
    Quant,
    Template,
    Threads,
    Underscores,
    Verbose,
    _style,
    with_settings,
)
from dtg_cli.cli.ui import ResultOutput, StderrProgress, setup_logging
from dtg_cli.errors import DtgError


@app.command(no_args_is_help=False)
@with_settings()
def generate(
    tags: Annotated[
        str | None,
        typer.Argument(
            help="Comma-separated tags, e.g. \"1girl, cat ears\". '-' (or none, with stdin not a terminal): one prompt per input line."
        ),
    ] = None,
    model: ModelName = "dart-v2-moe-sft",
    quant: Quant = "q8_0",
    prompt_format: PromptFormat = None,
    n_gpu_layers: GpuLayers = -1,
    threads: Threads = None,
    parallel: Parallel = None,
    output_format: Annotated[
        str, typer.Option("--format", help="text (one line per result), json (an array) or jsonl.", rich_help_panel=_OUTPUT)
    ] = "text",
    order: Order = None,
    template: Template = None,
    escape_tags: EscapeTags = None,
    underscores: Underscores = False,
    verbose: Verbose = False,
    settings: dict | None = None,
) -> None:
    """Generate tags from TAGS: the given tags, then the model's new ones, one line per result.

    The first use of a model downloads it from Hugging Face (Dart v2 is converted to GGUF once).
    """

    from dtg_cli.api import open_model
    from dtg_cli.errors import UsageError
    from dtg_cli.output import check_kind
    from dtg_cli.settings import Request

    setup_logging(verbose)
    check_kind(output_format)
    style = _style(order, template, escape_tags, underscores)
    base = Request.from_settings({**settings, "tags": "" if tags in (None, "-") else tags})
    lines = None if tags is None and settings["nl"] is not None else _input_lines(tags)  # --nl alone is the prompt
    log = logging.getLogger("dtg")
    with ResultOutput(output_format, style) as out:  # from here, an interrupted run leaves valid output (`[]`)
        first = next(lines, None) if lines is not None else None
        if lines is not None and first is None:
            raise UsageError("no input: stdin had no lines (give TAGS, or one comma-separated prompt per line)")
        with StderrProgress() as progress:
            generator = open_model(
                model, quant, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads, progress=progress, request=base
            )
        with generator:
            _generate(generator, base, lines, first, out, parallel, log)


def _generate(generator, base, lines, first, out, parallel, log) -> None:
    """Results for the one prompt (`lines` None) or for each line of `first` and `lines`, written to `out`."""
    import itertools
    from dataclasses import replace

    from dtg_cli.outcomes import Task
    from dtg_cli.scheduler import QueuedSource
    from dtg_cli.tagtext import split_tags

    log.info(f"{generator.name}: {generator.model.path} ({generator.format.name} prompt), loaded in {generator.load_s:.2f} s")
    if lines is None:
        results = generator.generate(base, out.stream, parallel=parallel)
    else:
        tasks = (
            line if isinstance(line, DtgError) else Task(replace(base, tags=tuple(split_tags(line))))
            for line in itertools.chain([first], lines)
        )
        results = _results(generator.run(QueuedSource(tasks), parallel=parallel, stream=out.stream))
    for result in results:
        out.write(result)
        t = result.timings
        log.info(
            f"seed {result.seed}: {len(result.new_tags)} new tags, {t['new_tokens']} tokens in "
            f"{t['generate_s']:.3f} s ({t['tokens_per_s']} tokens/s), stopped by {result.stop}"
        )


def _results(outcomes):
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
        if isinstance(outcome.item, DtgError):  # an input line that could not be read
            raise outcome.item
        yield outcome.result


def _input_lines(tags: str | None):
    """Prompts from stdin, one per line, when TAGS is '-' or absent with stdin not a terminal; else None."""
    if tags == "-" or (tags is None and not sys.stdin.isatty()):
        return stdin_lines()
    return None


def stdin_lines():
    """Lines of stdin, each a str, or a UsageError in the place of a line that is not UTF-8 (raised by the
    reader when it comes to it, so that the results before it are written first)."""
    from dtg_cli.errors import UsageError

    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield UsageError(f"stdin:{number}: not UTF-8 text")
