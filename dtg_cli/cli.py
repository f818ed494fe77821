"""The `dtg` command line: parses and validates flags, calls library functions, reports errors in one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from dtg_cli import __version__
from dtg_cli.errors import DtgError, SettingError


class _LazyConsole:
    """rich's Console for stderr, made on first use: importing rich.console costs about 40 ms, which a
    command that prints nothing on stderr (--version, most --help) need not pay."""

    _console = None

    def real(self):
        """The Console itself, for rich widgets that take one (Progress, Live)."""
        if _LazyConsole._console is None:
            from rich.console import Console  # start-up: see the class docstring

            _LazyConsole._console = Console(stderr=True, highlight=False, emoji=False)
        return _LazyConsole._console

    def __getattr__(self, name):
        return getattr(self.real(), name)


err = _LazyConsole()


def _stdout_console():
    from rich.console import Console  # start-up: see _LazyConsole

    return Console(highlight=False, emoji=False)


def escape(text: str) -> str:
    """rich markup escaping, imported when first needed (start-up)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage error class: typer vendors its own copy of click from 0.24 on, and then raises only
    that one (importing upstream click as well would cost about 20 ms of start-up)."""
    try:
        from typer._click.exceptions import UsageError as vendored

        return (vendored,)
    except ImportError:
        from click.exceptions import UsageError as upstream

        return (upstream,)


_USAGE_ERRORS = _usage_errors()


class _ErrorBoundary(TyperGroup):
    """The one place where project errors become a red line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DtgError as e:
            if os.environ.get("DTG_DEBUG"):
                raise
            message = e.as_flags() if isinstance(e, SettingError) else str(e)  # on the command line, settings are flags
            err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except _USAGE_ERRORS as e:  # a bad flag or value: one line too, with where to read more
            command = e.ctx.command_path if e.ctx else "dtg"
            err.print(f"[red]error:[/] {escape(e.format_message())} (see {command} --help)", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader went away (`dtg ... | head`): nothing to say
            _silence_stdout()
            raise typer.Exit(141) from None
        except OSError as e:  # the library turns expected I/O errors into DtgErrors; this is a full disk or a dead device
            if os.environ.get("DTG_DEBUG"):
                raise
            _silence_stdout()
            where = f" ({e.filename})" if e.filename else " (stdout)"
            err.print(f"[red]error:[/] cannot write{escape(where)}: {escape(e.strerror or str(e))}", soft_wrap=True)
            raise typer.Exit(1) from None


def _silence_stdout() -> None:
    """After a failed write, drop what is still buffered instead of failing again at exit."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit


def _keep_stdout_for_results() -> None:
    """Native code writes to file descriptor 1 (llama.cpp's abort prints a debugger backtrace there).
    Results go through `sys.stdout` only, so fd 1 is pointed at stderr and `sys.stdout` gets the real
    stdout on a descriptor of its own: whatever happens inside llama.cpp, stdout holds results only."""
    try:
        sys.stdout.flush()
        results = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        return
    sys.stdout = open(  # noqa: SIM115 - lives until exit
        results, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, buffering=1 if os.isatty(results) else -1
    )


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
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    pass


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


class _StderrProgress:
    """Conversion progress on stderr: a live bar on a terminal, one line per step otherwise."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.live = err.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err.real(), transient=True
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
    name: Annotated[str | None, typer.Option(help="File name stem (default: the checkpoint's directory or repo name).")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) to download and record.")] = None,
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
    from dtg_cli.convert import convert as run_convert
    from dtg_cli.quants import parse_quants

    _setup_logging(verbose)
    quants = parse_quants(quant)
    if verify:
        from dtg_cli.convert.verify import require_reference

        require_reference()  # fail before the work, not after it
    with _StderrProgress() as progress:
        paths = run_convert(src, out, quants, name=name, revision=revision, force=force, threads=threads, progress=progress)
    for path in paths:
        print(path, flush=True)
    if verify:
        _verify(src, paths, revision, threads)


def _verify(src: str, paths: list[Path], revision: str | None, threads: int | None) -> None:
    from dtg_cli.convert.verify import verify
    from dtg_cli.hub import download_checkpoint, looks_like_repo_id

    directory = Path(src) if Path(src).is_dir() else download_checkpoint(src, revision) if looks_like_repo_id(src) else Path(src)
    err.print("verifying against transformers…")
    results = verify(directory, paths, threads=threads)
    for result in results:
        err.print(result.line(), soft_wrap=True, highlight=False)
    if not any(r.judged for r in results):
        err.print("only an F16 file gets a pass or fail verdict: add f16 to --quant for one", highlight=False)
    if failed := [r.path.name for r in results if not r.passed]:
        raise DtgError(f"{', '.join(failed)}: the GGUF computes a different function than the checkpoint (see above)")


# --- generate ---------------------------------------------------------------------------------------

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


@app.command(no_args_is_help=False)
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
    copyright: Copyright = None,
    character: Character = None,
    artist: Artist = None,
    rating: Rating = None,
    aspect_ratio: AspectRatio = None,
    width: Width = None,
    height: Height = None,
    length: Length = None,
    identity: Identity = None,
    quality: Quality = None,
    auto: Auto = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    min_p: MinP = None,
    max_new_tokens: MaxNewTokens = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the first result (the next get seed+1, ...); default: random.", rich_help_panel=_SAMPLING)
    ] = None,
    ban: Ban = None,
    num: Annotated[int, typer.Option("--num", "-n", help="Results per prompt, with seeds seed, seed+1, ...", rich_help_panel=_OUTPUT)] = 1,
    output_format: Annotated[
        str, typer.Option("--format", help="text (one line per result), json (an array) or jsonl.", rich_help_panel=_OUTPUT)
    ] = "text",
    order: Order = None,
    template: Template = None,
    escape_tags: EscapeTags = None,
    underscores: Underscores = False,
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
    style = _style(order, template, escape_tags, underscores)
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, max_new_tokens=max_new_tokens, seed=seed)
    base = Request.from_options(
        "" if tags in (None, "-") else tags,
        copyright=copyright, character=character, artist=artist, quality=quality, rating=rating,
        aspect_ratio=aspect_ratio, width=width, height=height, length=length, identity=identity,
        ban=ban or (), num=num, sampling=sampling, auto=auto is not False,
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
    with generator, _Output(output_format, style) as out:
        log.info(f"{generator.name}: {generator.model.path} ({generator.format.name} prompt), loaded in {generator.load_s:.2f} s")
        if lines is None:
            results = generator.generate(base, out.stream, parallel=parallel)
        else:
            from dtg_cli.engine import QueuedSource, Task

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
        return _stdin_lines()
    return None


def _stdin_lines():
    """Lines of stdin, each a str, or a UsageError in the place of a line that is not UTF-8 (raised by the
    reader when it comes to it, so that the results before it are written first)."""
    from dtg_cli.errors import UsageError

    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield UsageError(f"stdin:{number}: not UTF-8 text")


class _Output:
    """Results on stdout: text lines (tags streamed live on a terminal), a JSON array, or JSON lines."""

    def __init__(self, kind: str, style):
        from rich.console import Console  # start-up: see _LazyConsole

        self.kind = kind
        self.style = style
        self.console = Console(highlight=False, soft_wrap=True, emoji=False)
        self.live = kind == "text" and self.console.is_terminal and style.order == "model"  # other orders need the whole result
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

        written = result.written(self.style)
        if self.kind == "text":
            if self.live:
                self.stream.finished()
            else:
                sys.stdout.write(written["text"] + "\n")
        else:
            record = result.to_dict()
            record.update(written)
            if self.kind == "json":
                sys.stdout.write(("," if self.count else "[") + "\n" + json.dumps(record, ensure_ascii=False, indent=2))
            else:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1
        sys.stdout.flush()


class _LiveLine:
    """On a terminal: each result's given tags, then its new tags as the model writes them. With several
    results decoded together, the first unfinished one is shown live and the others wait their turn."""

    def __init__(self, output: _Output):
        from collections import deque

        self.out = output
        self.units: deque = deque()  # started and not yet written, in output order
        self.waiting: dict = {}  # unit -> (layout, new tags so far) of a result that is not shown yet
        self.layout = None  # of the result shown
        self.first = True
        self.open = False  # a line has been started and not ended

    def start(self, unit, layout) -> None:
        self.units.append(unit)
        self.waiting[unit] = (layout, [])
        if len(self.units) == 1:
            self._show(unit)

    def tag(self, unit, tag: str) -> None:
        if self.units and self.units[0] == unit:
            self._print(tag)
        else:
            self.waiting[unit][1].append(tag)

    def finished(self) -> None:
        """The shown result has been written: end its line and show the next one."""
        from dtg_cli.tags import stream_parts

        after = stream_parts(self.layout, self.out.style)[1]
        self.out.console.print(escape(("" if self.first or not after else ", ") + after), end="")
        self.out.console.print()
        self.open = False
        self.units.popleft()
        if self.units:
            self._show(self.units[0])

    def _show(self, unit) -> None:
        from dtg_cli.tags import stream_parts

        self.layout, new = self.waiting.pop(unit)
        before = stream_parts(self.layout, self.out.style)[0]
        self.out.console.print(escape(before), end="")
        self.first = not before
        self.open = True
        for tag in new:
            self._print(tag)

    def _print(self, tag: str) -> None:
        shown = self.out.style.tag(tag, self.layout)
        self.out.console.print(("" if self.first else ", ") + f"[cyan]{escape(shown)}[/]", end="")
        self.first = False


# --- batch ------------------------------------------------------------------------------------------


@app.command()
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
    copyright: Copyright = None,
    character: Character = None,
    artist: Artist = None,
    rating: Rating = None,
    aspect_ratio: AspectRatio = None,
    width: Width = None,
    height: Height = None,
    length: Length = None,
    identity: Identity = None,
    quality: Quality = None,
    auto: Auto = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    min_p: MinP = None,
    max_new_tokens: MaxNewTokens = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Base seed. A record without its own seed gets, for each result, a seed derived from the base seed, "
            "its id (its line number if it has none) and the result's number (default: the file's \\[defaults] seed, else 0).",
            rich_help_panel=_SAMPLING,
        ),
    ] = None,
    ban: Ban = None,
    num: Annotated[int | None, typer.Option("--num", "-n", help="Results per record (default: 1).", rich_help_panel=_OUTPUT)] = None,
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
    verbose: Verbose = False,
) -> None:
    """Generate for every prompt of INPUT, many sequences at a time, writing results in input order.

    Each result is written and flushed as soon as it and those before it are done: an interrupted run
    leaves a valid file that --resume finishes. Settings, weakest first: the model family's defaults,
    the file's \\[defaults], these options, the record's own fields.
    """
    import contextlib

    from dtg_cli import batch as batching
    from dtg_cli.generate import open_model
    from dtg_cli.settings import Request, Sampling

    _setup_logging(verbose)
    style = _style(order, template, escape_tags, underscores)
    shard_of = batching.parse_shard(shard) if shard is not None else (0, 1)
    kind = batching.output_format(output, output_format)
    batching.check_output(output, resume=resume, force=force)
    if input_format is not None:
        batching.input_format(input_path, input_format, None)
    batching.check_input(input_path)
    options = {
        "copyright": copyright, "character": character, "artist": artist, "quality": quality, "rating": rating,
        "aspect_ratio": aspect_ratio, "width": width, "height": height, "length": length, "identity": identity,
        "ban": ban or None, "num": num, "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
        "max_new_tokens": max_new_tokens, "auto": auto,
    }  # fmt: skip
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, max_new_tokens=max_new_tokens, seed=seed)
    conditions = {
        k: options[k]
        for k in ("copyright", "character", "artist", "quality", "rating", "aspect_ratio", "width", "height", "length", "identity")
    }
    base = Request.from_options(
        "", sampling=sampling, ban=ban or (), num=num if num is not None else 1, **conditions
    )  # bad values fail before loading
    with _StderrProgress() as progress:
        generator = open_model(
            model, quant, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads, progress=progress, request=base
        )
    generator.warn_unknown = verbose  # a batch lists them once at the end instead
    summary = batching.Summary()
    bar = _BatchProgress(input_path, input_format, shard_of) if err.is_terminal else None
    try:
        with generator, bar or contextlib.nullcontext():
            batching.expand(
                generator, input_path, output, options=options, base_seed=seed, parallel=parallel, shard=shard_of,
                resume=resume, force=force, skip_errors=skip_errors, input_kind=input_format, output_kind=kind,
                style=style, on_error=lambda message: err.print(f"[yellow]skipped:[/] {escape(message)}", soft_wrap=True),
                on_progress=bar.update if bar else None, summary=summary,
            )  # fmt: skip
    except KeyboardInterrupt:
        err.print(escape(summary.line()), soft_wrap=True)
        where = f"; run the same command with --resume to finish {output}" if output not in (None, "-") else ""
        err.print(f"[red]interrupted[/]{escape(where)}", soft_wrap=True)
        raise typer.Exit(130) from None
    except DtgError:
        err.print(escape(summary.line()), soft_wrap=True)
        raise
    err.print(escape(summary.line()), soft_wrap=True)
    if generator.unknown_tags and not verbose:
        common = sorted(generator.unknown_tags.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{tag!r} ({n}x)" for tag, n in common)
        what = (
            f"are not in {generator.name}'s vocabulary, so the model saw <|unk|> for them"
            if generator.tokenizer.vocabulary is not None
            else "are not in the danbooru tag database"
        )
        logging.getLogger("dtg").warning(
            f"{len(generator.unknown_tags)} distinct input tags {what}; most frequent: {listed} (-v names each with suggestions)"
        )


class _BatchProgress:
    """A live bar on stderr: records done (of how many, when the input is a file), records/s, tags/s, ETA."""

    def __init__(self, input_path: str, input_format: str | None, shard: tuple[int, int]):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        total = None
        if input_path != "-" and Path(input_path).is_file():  # a pipe or a device cannot be read twice
            from dtg_cli import batch as batching

            kind = batching.sniff_format(input_path, input_format)
            count = batching.count_records(input_path, kind)
            k, n = shard
            total = len(range(k, count, n))
        self.bar = Progress(
            TextColumn("records"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rates]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err.real(), transient=True,
        )  # fmt: skip
        self.task = self.bar.add_task("batch", total=total, rates="")

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def update(self, summary) -> None:
        rates = (
            f"{summary.records / summary.elapsed_s:.2f} rec/s {summary.tags / summary.elapsed_s:.0f} tags/s" if summary.elapsed_s else ""
        )
        self.bar.update(self.task, completed=summary.records + summary.resumed_records, rates=rates)


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
    from dtg_cli.errors import UsageError

    if output_format not in ("jsonl", "text"):
        raise UsageError(f"--format: {output_format!r} is not one of jsonl, text")
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    for record, raw in batching.merge([str(f) for f in files], allow_gaps=allow_gaps):
        if output_format == "text":
            line = record.get("text", ", ".join(record.get("tags", []))) + "\n"
            sys.stdout.write(line)
        elif out is not None:
            sys.stdout.flush()
            out.write(raw)
        else:
            sys.stdout.write(raw.decode("utf-8"))
    sys.stdout.flush()


# --- tags -------------------------------------------------------------------------------------------

tags_app = typer.Typer(help="Look tags up in the bundled danbooru tag database.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")

TableFormat = Annotated[str, typer.Option("--format", help="table or json.")]


def _table_format(value: str) -> str:
    from dtg_cli.errors import UsageError

    if value not in ("table", "json"):
        raise UsageError(f"--format: {value!r} is not one of table, json")
    return value


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
    import json

    from dtg_cli.errors import UsageError
    from dtg_cli.quants import parse_quant
    from dtg_cli.store import tag_vocabulary
    from dtg_cli.syntax import parse
    from dtg_cli.tagdb import database
    from dtg_cli.tags import identify, model_form

    output_format = _table_format(output_format)
    if tags == "-":
        lines = list(_stdin_lines())
        if bad := next((line for line in lines if isinstance(line, DtgError)), None):
            raise bad
        text = "\n".join(lines)
    else:
        text = tags
    pieces, _ = parse(text)
    inputs = [p for p in pieces if p.kind == "tag"]
    if not inputs:
        what = "only " + ", ".join(sorted({p.kind + "s" for p in pieces})) if pieces else "nothing"
        raise UsageError(f"no tags to check: the input holds {what}")
    name, vocabulary, why = tag_vocabulary(model, parse_quant(quant))
    if why:
        err.print(f"[yellow]note:[/] {escape(why)}", soft_wrap=True)
    allowed = vocabulary.__contains__ if vocabulary is not None else None
    rows = []
    for piece in inputs:
        known = identify(piece.text)
        condition = known.category in ("rating", "quality")  # prompt conditions, not vocabulary tags
        in_model = None if vocabulary is None or condition else model_form(known.name, vocabulary) in vocabulary
        problem = known.unknown or in_model is False
        rows.append({
            "input": piece.wrapped(),
            "tag": known.name,
            "category": known.category,
            "posts": known.count,
            "alias": known.alias,
            "unknown": known.unknown,
            "model_knows": in_model,
            "suggestions": database().suggest(known.name, allowed=allowed) if problem else [],
        })  # fmt: skip
    if output_format == "json":
        sys.stdout.write(json.dumps({"model": name, "tags": rows}, ensure_ascii=False, indent=2) + "\n")
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
        _stdout_console().print(table)
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
    import json

    from dtg_cli.errors import UsageError
    from dtg_cli.tagdb import CATEGORIES, database, key

    output_format = _table_format(output_format)
    if not key(pattern):
        raise UsageError("the pattern is empty (use '*' for every tag)")
    if limit < 1:
        raise UsageError(f"--limit: {limit} must be 1 or more")
    if category is not None and category not in CATEGORIES.values():
        raise UsageError(f"--category: {category!r} is not one of {', '.join(CATEGORIES.values())}")
    found = database().search(pattern, limit=limit, category=category)
    if output_format == "json":
        sys.stdout.write(
            json.dumps([{"tag": t.name, "category": t.category, "posts": t.count} for t in found], ensure_ascii=False, indent=2) + "\n"
        )
    elif found:
        from rich.table import Table

        table = Table()
        table.add_column("tag")
        table.add_column("category")
        table.add_column("posts", justify="right")
        for t in found:
            table.add_row(escape(t.name), t.category, f"{t.count:,}")
        _stdout_console().print(table)
    if not found:
        err.print(f"no tag matches {escape(repr(pattern))}", soft_wrap=True)
        raise typer.Exit(1)


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
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


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


def main() -> None:
    _keep_stdout_for_results()
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command, e.g. while importing
        sys.exit(130)
