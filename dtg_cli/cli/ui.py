"""What the CLI shows on a terminal: the stderr console, progress, the live result line, result output."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path


class _LazyConsole:
    """rich's Console for stderr, made on first use: importing rich.console is a large part of start-up,
    which a command that prints nothing on stderr (--version, most --help) need not pay."""

    _console = None

    def real(self):
        """The Console itself, for rich widgets that take one (Progress, Live)."""
        if _LazyConsole._console is None:
            _LazyConsole._console = console_class()(file=_BestEffortStderr(), highlight=False, emoji=False)
        return _LazyConsole._console

    def __getattr__(self, name):
        return getattr(self.real(), name)


err = _LazyConsole()


def may_be_terminal(stream) -> bool:
    """False only where rich's Console would find no terminal: a stream that is not a tty, and none of the
    variables that make rich treat one as a terminal. Asked before rich is imported, which output to a
    pipe or a file then never pays for."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR") is not None:
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def stderr_is_terminal() -> bool:
    """Whether rich treats stderr as a terminal (live bars), asking rich only where it may say yes."""
    return may_be_terminal(sys.stderr) and err.is_terminal


@functools.cache
def console_class():
    """rich's Console, where a reader that went away (`dtg tags search ... | head`) is a BrokenPipeError for
    the CLI's boundary (exit 141, as for results) instead of rich's own exit 1."""
    from rich.console import Console  # start-up: see _LazyConsole

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console


class _BestEffortStderr:
    """stderr for messages: a write that fails (a full disk, `2>/dev/full`) is dropped instead of ending
    the run, whose results on stdout are what matters. It is whatever `sys.stderr` is at each write."""

    @property
    def _stream(self):
        return sys.stderr

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):  # isatty, fileno, encoding: rich reads them to lay out its output
        return getattr(self._stream, name)


def stdout_console():
    return console_class()(highlight=False, emoji=False)


def escape(text: str) -> str:
    """Text from outside (user input, a model's vocabulary or metadata) as rich prints it: control
    characters as escapes (`tagtext.printable`), markup escaped; rich is imported when first needed."""
    from rich.markup import escape as rich_escape

    from dtg_cli.tagtext import printable

    return rich_escape(printable(text))


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        colour = "yellow" if record.levelno >= logging.WARNING else "dim"
        label = "warning" if record.levelno >= logging.WARNING else "info"
        err.print(f"[{colour}]{label}:[/] {escape(record.getMessage())}", soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    from dtg_cli import llama

    log = logging.getLogger("dtg")
    if not any(isinstance(h, _WarningHandler) for h in log.handlers):
        log.addHandler(_WarningHandler())
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    llama.set_verbose(verbose)


class StderrProgress:
    """Conversion progress on stderr: a live bar on a terminal, one line per step otherwise. The bar (rich's
    live widgets, a twentieth of a second to import) is made at the first step: a run that downloads and
    converts nothing never loads it."""

    def __init__(self):
        self.live = stderr_is_terminal()
        self.bar = None
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def step(self, description: str, total: int | None = None) -> None:
        if not self.live:
            err.print(f"{escape(description)}…", soft_wrap=True)
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err.real(), transient=True
            )
            self.bar.start()
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[self.task].total or 1)
        self.task = self.bar.add_task(description, total=total)

    def advance(self, done: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done)


class ResultOutput:
    """Results on stdout (`dtg_cli.output.ResultWriter`), with the tags of text lines streamed live on a terminal."""

    def __init__(self, kind: str, style):
        from dtg_cli.output import ResultWriter

        self.writer = ResultWriter(kind, style)
        self.style = style
        self.console = None  # rich's, for the live line: only on a terminal
        if kind == "text" and style.order == "model" and may_be_terminal(sys.stdout):  # other orders need the whole result
            self.console = console_class()(highlight=False, soft_wrap=True, emoji=False)
        self.live = self.console is not None and self.console.is_terminal
        self.stream = LiveLine(self) if self.live else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Also on Ctrl-C: what was written stays valid (the array is closed, a live line is ended).
        if self.stream is not None and self.stream.open:
            self.console.print()
        # An interrupted run still gives valid JSON (`[]` before the first result); a failed one nothing.
        self.writer.close(failed=exc[0] is not None and not issubclass(exc[0], KeyboardInterrupt))
        sys.stdout.flush()

    def write(self, result) -> None:
        if self.live:
            self.stream.finished(result.nl)
        else:
            self.writer.write(result)


class LiveLine:
    """On a terminal: each result's given tags, then its new tags as the model writes them. With several
    results decoded together, the first unfinished one is shown live and the others wait their turn. The
    pieces of a line are `rendering.LineStream`'s."""

    def __init__(self, output: ResultOutput):
        from collections import deque

        self.out = output
        self.units: deque = deque()  # started and not yet written, in output order
        self.waiting: dict = {}  # unit -> (layout, new tags so far, caption so far) of a result not shown yet
        self.line = None  # the LineStream of the result shown
        self.open = False  # a line has been started and not ended

    def start(self, unit, layout) -> None:
        self.units.append(unit)
        self.waiting[unit] = (layout, [], [])
        if len(self.units) == 1:
            self._show(unit)

    def tag(self, unit, tag: str) -> None:
        if self.units and self.units[0] == unit:
            self._print(tag)
        else:
            self.waiting[unit][1].append(tag)

    def nl(self, unit, text: str) -> None:
        if not (self.units and self.units[0] == unit):
            self.waiting[unit][2].append(text)
            return
        self.out.console.print(escape(self.line.nl(text)), end="")

    def finished(self, nl: str | None = None) -> None:
        """The shown result has been written: end its line (with its caption, if any) and show the next one."""
        self.out.console.print(escape(self.line.end(nl)), end="")
        self.out.console.print()
        self.open = False
        self.units.popleft()
        if self.units:
            self._show(self.units[0])

    def _show(self, unit) -> None:
        from dtg_cli.rendering import LineStream

        layout, new, caption = self.waiting.pop(unit)
        self.line = LineStream(self.out.style)
        self.out.console.print(escape(self.line.start(layout)), end="")
        self.open = True
        for tag in new:
            self._print(tag)
        for text in caption:
            self.nl(unit, text)

    def _print(self, tag: str) -> None:
        separator, shown = self.line.tag_parts(tag)
        self.out.console.print(separator + f"[cyan]{escape(shown)}[/]", end="")


class BatchProgress:
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
