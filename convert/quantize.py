"""Quantize an F16 GGUF with llama.cpp's own quantizer (gguf-py cannot write Q6_K)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
from pathlib import Path

from dtg_cli import llama
from dtg_cli.errors import DtgError
from dtg_cli.quants import FILE_TYPES


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """Write `src` (an F16 GGUF) to `dst` in `quant` (q8_0 or q6_k), in a child process.

    llama.cpp's quantizer cannot be interrupted from Python: a Ctrl-C arrives inside its log callback,
    where ctypes swallows it, and the quantization runs on to the end. A child process can be stopped.
    """
    code = f"import sys; from {__name__} import quantize_here; sys.exit(quantize_here(*sys.argv[1:]))"
    args = [str(src), str(dst), quant, str(threads or 0), "1" if llama.verbose() else "0"]
    # A session of its own: a Ctrl-C in the terminal reaches this process only, which then stops the child.
    child = None
    try:
        with _interrupt_noted():  # raised inside Popen, it would leave a child nothing stops
            child = subprocess.Popen(
                [sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
            )
        rc = child.wait()
    except BaseException:
        if child is not None:
            child.kill()
            child.wait()
        raise
    if rc != 0:
        raise DtgError(f"llama.cpp failed to quantize {src.name} to {quant.upper()} (code {rc}); rerun with --verbose")


@contextlib.contextmanager
def _interrupt_noted():
    """Within: a Ctrl-C (SIGINT) is noted, not raised; on leaving, it is handled as it would have been
    (KeyboardInterrupt). Python sets signal handlers in the main thread only, and can put back only one it
    set; elsewhere this does nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    signal.signal(signal.SIGINT, lambda number, frame: noted.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted and callable(previous):
        previous(signal.SIGINT, noted[0])


def quantize_here(src: str, dst: str, quant: str, threads: str = "0", verbose: str = "0") -> int:
    """The quantization itself, in this process: llama.cpp's return code."""
    llama.set_verbose(verbose == "1")
    lib = llama.bindings()
    params = lib.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[quant]
    params.nthread = int(threads)
    return lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
