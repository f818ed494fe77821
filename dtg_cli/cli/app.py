"""The Typer app and its one error boundary: project errors become one line and an exit code."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from dtg_cli import __version__
from dtg_cli.cli.ui import err, escape
from dtg_cli.errors import DtgError, SettingError, Terminated

# click's UsageError, the base of every bad flag or value error. Typer exports its subclass BadParameter
# but not the class itself (from 0.24 on, Typer carries its own click and raises only that one's errors).
_USAGE_ERROR: type[Exception] = typer.BadParameter.__base__


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
        except _USAGE_ERROR as e:  # a bad flag or value: one line too, with where to read more
            command = e.ctx.command_path if e.ctx else "dtg"
            err.print(f"[red]error:[/] {escape(e.format_message())} (see {command} --help)", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
            err.print("[red]terminated[/]" if isinstance(e, Terminated) else "[red]interrupted[/]")
            raise typer.Exit(interrupted_exit_code(e)) from None
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


def interrupted_exit_code(e: KeyboardInterrupt) -> int:
    return Terminated.exit_code if isinstance(e, Terminated) else 130


def on_signal(signum: int, frame) -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM `Terminated` (a KeyboardInterrupt), so that both close
    what is open on their way out. One that lands inside llama.cpp's log callback would be dropped there by
    ctypes, so it is delivered again a moment later, when Python code outside the callback runs."""
    llama = sys.modules.get("dtg_cli.llama")
    if llama is not None and llama.in_log_callback(frame):
        import _thread
        import threading

        threading.Timer(0.05, _thread.interrupt_main, args=(signum,)).start()
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class _ClosedStdout:
    """sys.stdout when file descriptor 1 was closed (`dtg ... >&-`): writing a result is an error."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        raise DtgError("stdout is closed, and dtg writes its results there; redirect it to a file or /dev/null")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _silence_stdout() -> None:
    """After a failed write, drop what is still buffered instead of failing again at exit."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit


def keep_stdout_for_results() -> None:
    """Native code writes to file descriptor 1 (llama.cpp's abort prints a debugger backtrace there).
    Results go through `sys.stdout` only, so fd 1 is pointed at stderr and `sys.stdout` gets the real
    stdout on a descriptor of its own: whatever happens inside llama.cpp, stdout holds results only."""
    try:
        os.fstat(1)
    except OSError:  # closed: a file dtg opens must not take descriptor 1, which llama.cpp writes to
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.stdout = _ClosedStdout()
        return
    try:
        sys.stdout.flush()
        results = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        return
    # A character the terminal's encoding cannot hold (PYTHONIOENCODING=ascii) is written as an escape.
    sys.stdout = open(  # noqa: SIM115 - lives until exit
        results, "w", encoding=sys.stdout.encoding, errors="backslashreplace", buffering=1 if os.isatty(results) else -1
    )


app = typer.Typer(
    cls=_ErrorBoundary,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run Dart v2, DanTagGen and TIPO, the small language models that write Danbooru tag prompts.",
)


def _version(value: bool) -> None:
    if value:
        print(f"dtg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    pass
