"""`dtg convert`."""

from pathlib import Path
from typing import Annotated

import typer

from dtg_cli.cli.app import app
from dtg_cli.cli.options import Threads, Verbose
from dtg_cli.cli.ui import StderrProgress, err, setup_logging
from dtg_cli.errors import DtgError


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

    setup_logging(verbose)
    quants = parse_quants(quant)
    if verify:
        from dtg_cli.convert.verify import require_reference

        require_reference()  # fail before the work, not after it
    with StderrProgress() as progress:
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
