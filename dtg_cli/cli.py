"""The `dtg` command line: parses and validates flags, calls library functions, reports errors in one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from dtg_cli import __version__
from dtg_cli.errors import DtgError

err = Console(stderr=True, highlight=False)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage error class: typer vendors its own copy of click from 0.24 on."""
    classes = []
    try:
        from typer._click.exceptions import UsageError as vendored

        classes.append(vendored)
    except ImportError:
        pass
    try:
        from click.exceptions import UsageError as upstream

        classes.append(upstream)
    except ImportError:
        pass
    return tuple(classes)


_USAGE_ERRORS = _usage_errors()


class _ErrorBoundary(TyperGroup):
    """The one place where project errors become a red line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DtgError as e:
            if os.environ.get("DTG_DEBUG"):
                raise
            err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except _USAGE_ERRORS as e:  # a bad flag or value: one line too, with where to read more
            command = e.ctx.command_path if e.ctx else "dtg"
            err.print(f"[red]error:[/] {escape(e.format_message())} (see {command} --help)", soft_wrap=True)
            raise typer.Exit(2) from None
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
        err.print(f"[{colour}]{label}:[/] {escape(record.getMessage())}", soft_wrap=True)


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
            err.print(f"{escape(description)}…", soft_wrap=True)

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


# --- generate ---------------------------------------------------------------------------------------

_SAMPLING = "Sampling (defaults per model family)"


def _family_default(name: str) -> str:
    from dtg_cli.settings import FAMILY_SAMPLING

    values = {family: getattr(s, name) for family, s in FAMILY_SAMPLING.items()}
    if len(set(values.values())) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{family} {value}" for family, value in values.items())
_CONDITIONS = "Conditions"
_MODEL = "Model"
_OUTPUT = "Output"


@app.command(no_args_is_help=False)
def generate(
    tags: Annotated[
        Optional[str],
        typer.Argument(help="Comma-separated tags, e.g. \"1girl, cat ears\". '-' (or none, with stdin not a terminal): one prompt per input line."),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A model name (dtg models list) or a .gguf file.", rich_help_panel=_MODEL)] = "dart-v2-moe-sft",
    quant: Annotated[str, typer.Option("--quant", "-q", help="f16, q8_0 or q6_k.", rich_help_panel=_MODEL)] = "q8_0",
    prompt_format: Annotated[
        Optional[str],
        typer.Option(help="Prompt format for a .gguf file dtg cannot identify: dart-v2-sft, dart-v2-base, dantaggen, dantaggen-delta.", rich_help_panel=_MODEL),
    ] = None,
    n_gpu_layers: Annotated[int, typer.Option(help="Layers to offload to the GPU (-1: all; ignored by CPU-only builds).", rich_help_panel=_MODEL)] = -1,
    threads: Threads = None,
    copyright: Annotated[Optional[str], typer.Option(help="Copyright tags (comma-separated).", rich_help_panel=_CONDITIONS)] = None,
    character: Annotated[Optional[str], typer.Option(help="Character tags (comma-separated).", rich_help_panel=_CONDITIONS)] = None,
    artist: Annotated[Optional[str], typer.Option(help="Artist tags (DanTagGen).", rich_help_panel=_CONDITIONS)] = None,
    rating: Annotated[
        Optional[str], typer.Option(help="sfw, general, sensitive, nsfw, questionable or explicit (default: sfw).", rich_help_panel=_CONDITIONS)
    ] = None,
    aspect_ratio: Annotated[
        Optional[str],
        typer.Option(help="ultra_tall, tall, square, wide, ultra_wide, a number (width/height) or W:H (default: tall).", rich_help_panel=_CONDITIONS),
    ] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width; with --height, instead of --aspect-ratio.", rich_help_panel=_CONDITIONS)] = None,
    height: Annotated[Optional[int], typer.Option(help="Image height.", rich_help_panel=_CONDITIONS)] = None,
    length: Annotated[
        Optional[str], typer.Option(help="very_short, short, medium, long or very_long (default: long).", rich_help_panel=_CONDITIONS)
    ] = None,
    identity: Annotated[
        Optional[str], typer.Option(help="Dart SFT: none, lax or strict, how closely to keep the given subjects (default: lax).", rich_help_panel=_CONDITIONS)
    ] = None,
    quality: Annotated[Optional[str], typer.Option(help="DanTagGen delta: quality tags, e.g. masterpiece.", rich_help_panel=_CONDITIONS)] = None,
    temperature: Annotated[Optional[float], typer.Option(help=f"0 is greedy (default: {_family_default('temperature')}).", rich_help_panel=_SAMPLING)] = None,
    top_p: Annotated[Optional[float], typer.Option(help=f"Nucleus sampling, 1 is off (default: {_family_default('top_p')}).", rich_help_panel=_SAMPLING)] = None,
    top_k: Annotated[Optional[int], typer.Option(help=f"Keep the k likeliest tokens, 0 is off (default: {_family_default('top_k')}).", rich_help_panel=_SAMPLING)] = None,
    min_p: Annotated[Optional[float], typer.Option(help=f"Drop tokens below this fraction of the likeliest, 0 is off (default: {_family_default('min_p')}).", rich_help_panel=_SAMPLING)] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=f"Token budget per result (default: {_family_default('max_new_tokens')}).", rich_help_panel=_SAMPLING)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the first result (the next get seed+1, ...); default: random.", rich_help_panel=_SAMPLING)] = None,
    ban: Annotated[
        Optional[list[str]],
        typer.Option(help="A tag that must not appear: a glob such as '*hair*' or re:REGEX. Repeatable.", rich_help_panel=_SAMPLING),
    ] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="Results per prompt, with seeds seed, seed+1, ...", rich_help_panel=_OUTPUT)] = 1,
    output_format: Annotated[
        str, typer.Option("--format", help="text (one line per result), json (an array) or jsonl.", rich_help_panel=_OUTPUT)
    ] = "text",
    escape_tags: Annotated[bool, typer.Option("--escape", help="Write ( and ) as \\( and \\) for web UIs.", rich_help_panel=_OUTPUT)] = False,
    verbose: Verbose = False,
) -> None:
    """Generate tags from TAGS: the given tags, then the model's new ones, one line per result.

    The first use of a model downloads it from Hugging Face (Dart v2 is converted to GGUF once).
    """
    import itertools
    from dataclasses import replace

    from dtg_cli.errors import UsageError
    from dtg_cli.generate import open_model
    from dtg_cli.settings import Request, Sampling
    from dtg_cli.tags import split_tags

    _setup_logging(verbose)
    if output_format not in ("text", "json", "jsonl"):
        raise UsageError(f"--format: {output_format!r} is not one of text, json, jsonl")
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, max_new_tokens=max_new_tokens, seed=seed)
    base = Request.from_options(
        "" if tags in (None, "-") else tags,
        copyright=copyright, character=character, artist=artist, quality=quality, rating=rating,
        aspect_ratio=aspect_ratio, width=width, height=height, length=length, identity=identity,
        ban=ban or (), num=num, sampling=sampling,
    )  # fmt: skip
    lines = _input_lines(tags)
    first = next(lines, None) if lines is not None else None
    if lines is not None and first is None:
        raise UsageError("no input: stdin had no lines (give TAGS, or one comma-separated prompt per line)")
    with _StderrProgress() as progress:
        generator = open_model(
            model, quant, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads, progress=progress, request=base
        )
    log = logging.getLogger("dtg")
    with generator, _Output(output_format, escape_tags) as out:
        log.info(f"{generator.name}: {generator.model.path} ({generator.format.name} prompt), loaded in {generator.load_s:.2f} s")
        prompts = [base] if lines is None else (replace(base, tags=tuple(split_tags(line))) for line in itertools.chain([first], lines))
        for request in prompts:
            for result in generator.generate(request, out.stream):
                out.write(result)
                t = result.timings
                log.info(
                    f"seed {result.seed}: {len(result.new_tags)} new tags, {t['new_tokens']} tokens in "
                    f"{t['generate_s']:.3f} s ({t['tokens_per_s']} tokens/s), stopped by {result.stop}"
                )


def _input_lines(tags: str | None):
    """Prompts from stdin, one per line, when TAGS is '-' or absent with stdin not a terminal; else None."""
    if tags == "-" or (tags is None and not sys.stdin.isatty()):
        return (line.rstrip("\r\n") for line in sys.stdin)
    return None


class _Output:
    """Results on stdout: text lines (tags streamed live on a terminal), a JSON array, or JSON lines."""

    def __init__(self, kind: str, escape_tags: bool):
        from dtg_cli.tags import escape as escape_tag

        self.kind = kind
        self.fix = escape_tag if escape_tags else (lambda t: t)
        self.console = Console(highlight=False, soft_wrap=True)
        self.live = kind == "text" and self.console.is_terminal
        self.count = 0
        self.stream = _LiveLine(self) if self.live else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Also on Ctrl-C: what was written stays valid (the array is closed, a live line is ended).
        if self.stream is not None and self.stream.open:
            self.console.print()
        if self.kind == "json" and (self.count or exc[0] is None):
            sys.stdout.write("\n]\n" if self.count else "[]\n")  # nothing at all for a run that failed at once
        sys.stdout.flush()

    def write(self, result) -> None:
        import json

        tags = [self.fix(t) for t in result.tags]
        if self.kind == "text":
            if self.live:
                self.console.print()
                self.stream.open = False
            else:
                sys.stdout.write(", ".join(tags) + "\n")
        else:
            record = result.to_dict()
            record["tags"], record["new_tags"] = tags, [self.fix(t) for t in result.new_tags]
            if self.kind == "json":
                sys.stdout.write(("," if self.count else "[") + "\n" + json.dumps(record, ensure_ascii=False, indent=2))
            else:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1
        sys.stdout.flush()


class _LiveLine:
    """On a terminal: the given tags, then each new tag as the model writes it."""

    def __init__(self, output: _Output):
        self.out = output
        self.first = True
        self.open = False  # a line has been started and not ended

    def start(self, variant: int, tags: list[str]) -> None:
        self.out.console.print(", ".join(self.out.fix(t) for t in tags), end="")
        self.first = not tags
        self.open = True

    def tag(self, variant: int, tag: str) -> None:
        self.out.console.print(("" if self.first else ", ") + f"[cyan]{escape(self.out.fix(tag))}[/]", end="")
        self.first = False


# --- models -----------------------------------------------------------------------------------------

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
        (r["name"], r["family"], r["params"], r["license"] or "see model card", ", ".join(q.upper() for q in r["on_disk"]) or "-", r["repo"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A model name (dtg models list).")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="Comma-separated: f16, q8_0, q6_k.")] = "q8_0",
    force: Annotated[bool, typer.Option("--force", help="Download (and convert) again even if the file is on disk.")] = False,
    verbose: Verbose = False,
) -> None:
    """Download a model (Dart v2: download and convert to GGUF) and print the file's path."""
    from convert import parse_quants
    from dtg_cli.registry import lookup
    from dtg_cli.store import pull

    _setup_logging(verbose)
    entry = lookup(name)
    quants = parse_quants(quant)
    with _StderrProgress() as progress:
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
    from dtg_cli.registry import is_model_name, lookup
    from dtg_cli.store import gguf_info, on_disk, parse_quant

    if output_format not in ("text", "json"):
        raise UsageError(f"--format: {output_format!r} is not one of text, json")
    info: dict = {}
    if is_model_name(model):
        entry = lookup(model)
        info["model"] = {k: v for k, v in asdict(entry).items() if v is not None}
        path = on_disk(entry, parse_quant(quant))
        if path is None:
            info["file"] = f"not on disk (dtg models pull {entry.name} --quant {quant})"
        else:
            info["file"] = gguf_info(path)
    else:
        path = Path(model).expanduser()
        if not path.is_file():
            from dtg_cli.errors import ModelFileError

            raise ModelFileError(f"{path}: no such model file")
        info["file"] = gguf_info(path)
    if output_format == "json":
        print(json.dumps(info, indent=2))
        return
    for section, values in info.items():
        if isinstance(values, str):
            print(f"{section}: {values}")
            continue
        for key, value in values.items():
            print(f"{key}: {_human(key, value)}")


def _human(key: str, value) -> str:
    if key == "size_bytes":
        return f"{value / 2**20:.1f} MiB"
    if key == "parameters":
        return f"{value / 1e6:.1f}M"
    return str(value)


@models_app.command("rm")
def models_rm(
    name: Annotated[str, typer.Argument(help="A model name (dtg models list).")],
    quant: Annotated[Optional[str], typer.Option("--quant", "-q", help="Only these (comma-separated); default: every quant.")] = None,
) -> None:
    """Delete a model's GGUF files and print their paths."""
    from convert import parse_quants
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command, e.g. while importing
        sys.exit(130)
