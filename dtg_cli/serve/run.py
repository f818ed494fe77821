"""`run_server`: the whole of `dtg serve`: checks, the listening socket, uvicorn, and the way out.

The socket is bound before anything loads, so that a port in use is one line at once, and /health answers
503 while the models load. SIGINT and SIGTERM stop the server as uvicorn does: no new connections, the
requests in flight finished (for at most `shutdown_timeout` seconds), the models closed; then the
command returns, and dtg exits 0.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Callable

from dtg_cli.errors import DtgError, UsageError
from dtg_cli.serve.app import Limits, Service, create_app
from dtg_cli.store import resolve


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening; a DtgError of one line when it cannot be."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise DtgError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Say:
    """The loading of a model that is not on disk yet, told on stderr a step at a line."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def step(self, description: str, total: int | None = None) -> None:
        self.say(f"{description}…")

    def advance(self, done: int) -> None:
        pass


def run_server(
    *,
    models: list[str],
    quant: str = "q8_0",
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    insecure_no_key: bool = False,
    cors_origins: tuple[str, ...] = (),
    parallel: int | None = None,
    context: int | None = None,
    n_gpu_layers: int = -1,
    threads: int | None = None,
    max_queue: int = 256,
    max_body: int = 1 << 20,
    request_timeout: float = 300.0,
    shutdown_timeout: float = 30.0,
    verbose: bool = False,
    say: Callable[[str], None] = print,
) -> str:
    """Serve until SIGINT or SIGTERM; returns the address it served on. Raises DtgError for what cannot
    start (a bad host, a port in use, a model that is not there or does not load)."""
    import uvicorn

    if not is_loopback(host) and not api_key and not insecure_no_key:
        raise UsageError(f"--host {host} is reachable from other machines: give --api-key KEY (or DTG_API_KEY), or --insecure-no-key")
    for name in models:
        resolve(name)  # an unknown name or a missing file: one line now, not after the server has started
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    address = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    service = Service(
        list(models),
        open_options={"quant": quant, "n_gpu_layers": n_gpu_layers, "threads": threads, "progress": _Say(say)},
        worker_options={"parallel": parallel, "context": context, "max_queue": max_queue},
        limits=Limits(max_body=max_body, request_timeout=request_timeout, api_key=api_key, cors_origins=cors_origins),
    )
    config = uvicorn.Config(
        create_app(service),
        log_config=None,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        timeout_graceful_shutdown=shutdown_timeout,
        lifespan="on",
        http="h11",
        ws="none",
        loop="asyncio",
        server_header=False,
    )
    server = uvicorn.Server(config)

    def failed(error: BaseException) -> None:
        server.should_exit = True

    service.on_load_error = failed
    service.on_ready = lambda: say(f"dtg serve: ready: {', '.join(service.workers)} on {address}")
    # uvicorn catches SIGINT and SIGTERM while it serves, then raises them again: here they are then ignored,
    # the shutdown having been done.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    say(f"dtg serve: listening on {address}, loading {', '.join(models)}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if service.load_error is not None:
        if isinstance(service.load_error, DtgError):
            raise service.load_error
        raise DtgError(f"a model could not be loaded: {service.load_error}") from service.load_error
    return address
