"""The Python API: `open_model` (a registry name or a .gguf path, pulled if needed, loaded) and `generate`,
the whole job behind `dtg generate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dtg_cli.engine import Generator, check_conditions
from dtg_cli.errors import UsageError
from dtg_cli.families import formats
from dtg_cli.outcomes import Result, Stream
from dtg_cli.quants import DEFAULT_QUANT, parse_quant
from dtg_cli.settings import Request
from dtg_cli.store import locate, resolve

DEFAULT_MODEL = "dart-v2-moe-sft"


def open_model(
    model: str = DEFAULT_MODEL,
    quant: str = DEFAULT_QUANT,
    *,
    prompt_format: str | None = None,
    n_gpu_layers: int = -1,
    threads: int | None = None,
    progress=None,
    request: Request | None = None,
) -> Generator:
    """Load a model by registry name or .gguf path, pulling it first if it is not on disk.

    Given a `request`, its conditions are checked against the model's prompt format before anything is
    downloaded or loaded.
    """
    quant = parse_quant(quant)
    if prompt_format is not None and prompt_format not in formats():
        raise UsageError(f"--prompt-format: {prompt_format!r} is not one of {', '.join(formats())}")
    if request is not None and not isinstance(entry := resolve(model), Path):
        check_conditions(request, formats()[prompt_format or entry.prompt], entry.name)
    located = locate(model, quant, progress)
    prompt_format = prompt_format or (located.entry.prompt if located.entry else None)
    generator = Generator(located.path, name=located.name, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads)
    if request is not None:
        generator.check(request)
    return generator


def generate(
    tags: str | list[str] = "", *, model: str = DEFAULT_MODEL, quant: str = DEFAULT_QUANT, stream: Stream | None = None, **options: Any
) -> list[Result]:
    """Generate from one tag list. `options` are `Request.from_options` keywords (rating, length, sampling, ...).

    >>> generate("1girl, cat ears", rating="general", length="long", sampling={"seed": 1})[0].tags  # doctest: +SKIP
    """
    request = Request.from_options(tags, **options)
    with open_model(model, quant, request=request) as generator:
        return list(generator.generate(request, stream))
