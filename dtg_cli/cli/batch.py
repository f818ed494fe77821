"""`dtg batch` and `dtg merge`."""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dtg_cli.cli.app import app, interrupted_exit_code
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
from dtg_cli.cli.ui import BatchProgress, StderrProgress, err, escape, setup_logging, stderr_is_terminal
from dtg_cli.errors import DtgError, Terminated, UsageError

_RAY = "Ray cluster"


@app.command()
@with_settings(
    seed="Base seed. A record without its own seed gets, for each result, a seed derived from the base seed, its id (its line "
    "number if it has none) and the result's number (default: the file's \\[defaults] seed, else 0).",
    num="Results per record (default: 1).",
)
def batch(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Prompts: .txt (one comma-separated prompt per line; blank lines and # comments skipped), .jsonl "
            "(one object per line with generate's options as fields, plus seed, num and id) or .toml (\\[defaults] "
            "and \\[\\[prompt]] tables); '-' reads stdin.",
        ),
    ],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="A .jsonl or .txt file (default: text lines on stdout).", rich_help_panel=_OUTPUT)
    ] = None,
    model: ModelName = "dart-v2-moe-sft",
    quant: Quant = "q8_0",
    prompt_format: PromptFormat = None,
    n_gpu_layers: GpuLayers = -1,
    threads: Threads = None,
    parallel: Parallel = None,
    output_format: Annotated[
        str | None, typer.Option("--format", help="text or jsonl (default: from the -o name; text on stdout).", rich_help_panel=_OUTPUT)
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(help="txt, jsonl or toml (default: from the extension, else from the first line).", rich_help_panel=_OUTPUT),
    ] = None,
    order: Order = None,
    template: Template = None,
    escape_tags: EscapeTags = None,
    underscores: Underscores = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the results already in -o FILE and do the rest.", rich_help_panel="Run")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace -o FILE if it exists.", rich_help_panel="Run")] = False,
    skip_errors: Annotated[
        bool, typer.Option("--skip-errors", help="Report a bad record on stderr and go on (default: stop there).", rich_help_panel="Run")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: do only the records whose index (from 0) is K modulo N, for N machines numbered 0..N-1.", rich_help_panel="Run"
        ),
    ] = None,
    use_ray: Annotated[
        bool, typer.Option("--ray", help='Decode on a Ray cluster (pip install "dtg-cli[ray]"); docs/ray.md.', rich_help_panel=_RAY)
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The cluster: HOST:PORT, ray://HOST:PORT or auto (default: $RAY_ADDRESS, else a local one).", rich_help_panel=_RAY
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=10000, help="Ray actors, each with the model loaded once (default: one per node).", rich_help_panel=_RAY),
    ] = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option(
            min=0.01, max=1024, help="CPUs of each actor, also its threads (default: the cluster's CPUs shared out).", rich_help_panel=_RAY
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float, typer.Option(min=0, max=64, help="GPUs of each actor (a CUDA build of llama-cpp-python on the nodes).", rich_help_panel=_RAY)
    ] = 0,
    verbose: Verbose = False,
    settings: dict | None = None,
) -> None:
    """Generate for every prompt of INPUT, many sequences at a time, writing results in input order.

    Each result is written and flushed as soon as it and those before it are done: an interrupted run
    leaves a valid file that --resume finishes. Settings, weakest first: the model family's defaults,
    the file's \\[defaults], these options, the record's own fields.
    """
    import contextlib

    from dtg_cli import batch as batching
    from dtg_cli.api import open_model
    from dtg_cli.settings import Request

    setup_logging(verbose)
    style = _style(order, template, escape_tags, underscores)
    shard_of = batching.parse_shard(shard) if shard is not None else (0, 1)
    kind = batching.output_format(output, output_format)
    batching.check_output(output, resume=resume, force=force)
    if input_format is not None:
        batching.input_format(input_path, input_format, None)
    batching.check_input(input_path)
    if not use_ray and (ray_address or workers or cpus_per_worker or gpus_per_worker):
        raise UsageError("--ray-address, --workers, --cpus-per-worker and --gpus-per-worker go with --ray")
    if use_ray:
        from dtg_cli.batch.cluster import import_ray

        import_ray()  # the extra it needs, named before anything loads
    seed = settings.pop("seed")  # the base seed of the records' own seeds
    options = {**settings, "ban": settings["ban"] or None}
    base = Request.from_settings({**options, "seed": seed})  # bad values fail before loading
    with StderrProgress() as progress:
        generator = open_model(
            model, quant, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads, progress=progress, request=base
        )
    generator.unknown.warn = verbose  # a batch lists them once at the end instead
    summary = batching.Summary()
    bar = BatchProgress(input_path, input_format, shard_of) if stderr_is_terminal() else None
    try:
        with (
            generator,
            _cluster(
                use_ray, model, quant, prompt_format, n_gpu_layers, parallel, ray_address, workers, cpus_per_worker, gpus_per_worker
            ) as cluster,
            bar or contextlib.nullcontext(),
        ):
            batching.expand(
                generator, input_path, output, options=options, base_seed=seed, parallel=parallel, shard=shard_of,
                resume=resume, force=force, skip_errors=skip_errors, input_kind=input_format, output_kind=kind,
                style=style, on_error=lambda message: err.print(f"[yellow]skipped:[/] {escape(message)}", soft_wrap=True),
                on_progress=bar.update if bar else None, summary=summary, engine=cluster.run if cluster else None,
            )  # fmt: skip
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM
        err.print(escape(summary.line()), soft_wrap=True)
        where = "" if batching.is_stdout(output) else f"; run the same command with --resume to finish {output}"
        err.print(f"[red]{'terminated' if isinstance(e, Terminated) else 'interrupted'}[/]{escape(where)}", soft_wrap=True)
        raise typer.Exit(interrupted_exit_code(e)) from None
    except DtgError:
        if summary.records:  # what was written before the error; a run that wrote nothing says the error alone
            err.print(escape(summary.line()), soft_wrap=True)
        raise
    err.print(escape(summary.line()), soft_wrap=True)
    summary_line = generator.unknown.summary()
    if summary_line and not verbose:
        logging.getLogger("dtg").warning(summary_line)


def _cluster(use_ray, model, quant, prompt_format, n_gpu_layers, parallel, address, workers, cpus, gpus):
    """The Ray actors of a --ray run (a context manager), or a null context."""
    import contextlib

    if not use_ray:
        return contextlib.nullcontext()
    from dtg_cli.batch.cluster import RayWorkers
    from dtg_cli.store import resolve

    where = resolve(model)
    name = str(where.resolve()) if isinstance(where, Path) else model  # a file: the same path on every node
    return RayWorkers(
        name, quant, address=address, workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus,
        prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, parallel=parallel,
    )  # fmt: skip


@app.command()
def merge(
    files: Annotated[list[Path], typer.Argument(help="JSONL outputs of dtg batch --shard K/N, one per shard.")],
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl (the records) or text (each result's line, as dtg batch wrote it).")
    ] = "jsonl",
    allow_gaps: Annotated[
        bool, typer.Option("--allow-gaps", help="Merge even when a record is in no file (records skipped as bad).")
    ] = False,
) -> None:
    """Merge the JSONL outputs of a sharded batch run into one stream on stdout, in input order.

    A result found in two files, or a record found in none, stops the merge with an error."""
    from dtg_cli import batch as batching
    from dtg_cli.output import LINE_KINDS, check_kind
    from dtg_cli.tagtext import printable

    check_kind(output_format, LINE_KINDS)
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    try:
        into = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file (a test's buffer)
        into = None
    for record, raw in batching.merge([str(f) for f in files], allow_gaps=allow_gaps, output=into):
        if output_format == "text":
            sys.stdout.write(printable(record["text"]) + "\n")  # one line, as dtg batch writes it
        elif out is not None:
            sys.stdout.flush()
            out.write(raw)
        else:
            sys.stdout.write(raw.decode("utf-8"))
    sys.stdout.flush()
