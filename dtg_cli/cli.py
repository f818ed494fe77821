"""The `dtg` command line: parses and validates flags, calls library functions, reports errors in one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from dtg_cli import __version__
from dtg_cli.errors import DtgError

err = Console(stderr=True, highlight=False)


class _ErrorBoundary(TyperGroup):
    """The one place where project errors become a red line on stderr and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DtgError as e:
            if os.environ.get("DTG_DEBUG"):
                raise
            err.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run Dart v2 and DanTagGen, the small language models that write Danbooru tag prompts.",
)


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        colour = "yellow" if record.levelno >= logging.WARNING else "dim"
        label = "warning" if record.levelno >= logging.WARNING else "info"
        err.print(f"[{colour}]{label}:[/] {record.getMessage()}", soft_wrap=True)


def _setup_logging(verbose: bool) -> None:
    from dtg_cli import llama

    log = logging.getLogger("dtg")
    if not any(isinstance(h, _WarningHandler) for h in log.handlers):
        log.addHandler(_WarningHandler())
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    llama.set_verbose(verbose)


def _version(value: bool) -> None:
    if value:
        print(f"dtg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    pass


# Options shared by several commands, declared once.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also show llama.cpp's own log lines and details.")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")]


class _StderrProgress:
    """Conversion progress on stderr: a live bar on a terminal, one line per step otherwise."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.live = err.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
        )
        self.task = None

    def __enter__(self):
        if self.live:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.bar.stop()

    def step(self, description: str, total: int | None = None) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[self.task].total or 1)
        if self.live:
            self.task = self.bar.add_task(description, total=total)
        else:
            err.print(f"{description}…")

    def advance(self, done: int) -> None:
        if self.live and self.task is not None:
            self.bar.update(self.task, completed=done)


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="A checkpoint directory, or a Hugging Face repo id such as p1atdev/dart-v2-moe-sft.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the GGUF files (created if missing).")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="Comma-separated formats to write: f16, q8_0, q6_k.")] = "f16,q8_0,q6_k",
    name: Annotated[Optional[str], typer.Option(help="File name stem (default: the checkpoint's directory or repo name).")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit) to download and record.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Compare every written file with the checkpoint through transformers (needs torch).")
    ] = False,
    threads: Threads = None,
    verbose: Verbose = False,
) -> None:
    """Convert a Dart v2 or DanTagGen checkpoint to GGUF files: NAME-F16.gguf, NAME-Q8_0.gguf, NAME-Q6_K.gguf.

    Prints the written paths on stdout; progress, warnings and --verify figures go to stderr.

    Hub downloads honour HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT and HF_HOME.
    """
    from convert import convert as run_convert
    from convert import parse_quants

    _setup_logging(verbose)
    quants = parse_quants(quant)
    if verify:
        from convert.verify import require_reference

        require_reference()  # fail before the work, not after it
    with _StderrProgress() as progress:
        paths = run_convert(src, out, quants, name=name, revision=revision, force=force, threads=threads, progress=progress)
    for path in paths:
        print(path, flush=True)
    if verify:
        _verify(src, paths, revision, threads)


def _verify(src: str, paths: list[Path], revision: str | None, threads: int | None) -> None:
    from convert.verify import verify
    from dtg_cli.hub import download_checkpoint, looks_like_repo_id

    directory = Path(src) if Path(src).is_dir() else download_checkpoint(src, revision) if looks_like_repo_id(src) else Path(src)
    err.print("verifying against transformers…")
    for result in verify(directory, paths, threads=threads):
        err.print(result.line(), soft_wrap=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command, e.g. while importing
        sys.exit(130)
