"""`dtg serve`."""

from typing import Annotated

import typer

from dtg_cli.cli.app import app
from dtg_cli.cli.options import GpuLayers, Quant, Threads, Verbose

_NET = "Network"
_LIMITS = "Limits"


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="A model to serve: a name (dtg models list) or a .gguf file. Repeatable (default: dart-v2-moe-sft)."
        ),
    ] = None,
    quant: Quant = "q8_0",
    host: Annotated[
        str, typer.Option(help="Address to listen on; one that is not loopback needs --api-key.", rich_help_panel=_NET)
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one, printed).", rich_help_panel=_NET)] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="DTG_API_KEY",
            show_envvar=True,
            help="Clients must send Authorization: Bearer KEY (every route but / and /health).",
            rich_help_panel=_NET,
        ),
    ] = None,
    insecure_no_key: Annotated[bool, typer.Option(help="Listen on a non-loopback --host without a key.", rich_help_panel=_NET)] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="An origin whose pages may call the API (CORS; default: none). Repeatable.", rich_help_panel=_NET),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            min=2,
            max=255,
            help="Sequences decoded together per model (default: 128 on a CPU, 255 with layers on a GPU, fewer where their KV cache would pass an eighth of the machine's memory).",
            rich_help_panel="Model",
        ),
    ] = None,
    context: Annotated[
        int | None,
        typer.Option(
            min=512,
            max=32768,
            help="KV cells per sequence, at most the model's training context (default: a 256-token prompt and the family's default token budget, at least 512). A request needing more is refused.",
            rich_help_panel="Model",
        ),
    ] = None,
    n_gpu_layers: GpuLayers = -1,
    threads: Threads = None,
    max_queue: Annotated[
        int, typer.Option(min=1, max=100000, help="Requests open per model before new ones get 429.", rich_help_panel=_LIMITS)
    ] = 256,
    max_body: Annotated[
        int, typer.Option(min=1024, max=1 << 30, help="Bytes of a request body (413 past it).", rich_help_panel=_LIMITS)
    ] = 1 << 20,
    request_timeout: Annotated[
        float,
        typer.Option(min=0.1, max=86400, help="Seconds a request may take to its last result (504 past it).", rich_help_panel=_LIMITS),
    ] = 300.0,
    shutdown_timeout: Annotated[
        float,
        typer.Option(min=0, max=86400, help="On SIGINT or SIGTERM: seconds to finish the requests in flight.", rich_help_panel=_LIMITS),
    ] = 30.0,
    verbose: Verbose = False,
) -> None:
    """Serve models over HTTP: dtg's API, an OpenAI-compatible one, and a page to try them at /.

    Each model is loaded once and decodes for every client in one continuous batch; a request gets the
    results dtg batch and dtg generate --parallel 2 give for the same options and seed. Details:
    docs/serve.md.
    """
    from dtg_cli.cli.ui import err, escape, setup_logging
    from dtg_cli.serve.run import run_server

    setup_logging(verbose)
    address = run_server(
        models=model or ["dart-v2-moe-sft"],
        quant=quant,
        host=host,
        port=port,
        api_key=api_key or None,
        insecure_no_key=insecure_no_key,
        cors_origins=tuple(cors_origin or ()),
        parallel=parallel,
        context=context,
        n_gpu_layers=n_gpu_layers,
        threads=threads,
        max_queue=max_queue,
        max_body=max_body,
        request_timeout=request_timeout,
        shutdown_timeout=shutdown_timeout,
        verbose=verbose,
        say=lambda text: err.print(escape(text), soft_wrap=True, highlight=False),
    )
    err.print(f"dtg serve: stopped ({escape(address)})", highlight=False)
