"""The HTTP API of `dtg serve` (Starlette, run by uvicorn): routes, bearer key, body limits, errors as JSON,
Server-Sent Events, /metrics and the page at /.

`Service` holds the loaded models (a `Worker` each) and the server's limits; `create_app` gives the ASGI
app over it. The event loop never decodes: a request becomes a `Job` on its model's decode thread, whose
events come back through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dtg_cli.errors import DtgError
from dtg_cli.jsontext import BadJSON, loads
from dtg_cli.output import json_text, result_record
from dtg_cli.reading import check_tags
from dtg_cli.rendering import LineStream
from dtg_cli.serve.bodies import ApiError, Parsed, api_error, parse_generate
from dtg_cli.serve.openai_api import Reply, finish_reason, parse_chat, parse_completion, wants_usage
from dtg_cli.serve.workers import Event, Job, Worker
from dtg_cli.settings import DEFAULT_ASPECT_RATIO, DEFAULT_IDENTITY, DEFAULT_LENGTH, DEFAULT_RATING, SETTINGS

log = logging.getLogger("dtg")

DRAIN_LIMIT = 64 << 20  # bytes of an oversized body read (and dropped) before answering 413; past it, the connection closes
CLIENT_GONE = 499  # the answer to a client that closed its connection first (never received; counted in /metrics)
HEARTBEAT_S = 10.0  # an idle event stream sends a comment this often (and so learns that its client has gone)
OPEN_PATHS = ("/health", "/")  # answered without the key: the state of the server, and the page (which holds no data)


@dataclass
class Limits:
    """What `dtg serve`'s options bound."""

    max_body: int = 1 << 20  # bytes of a request body
    request_timeout: float = 300.0  # seconds from a request to its last result
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()


@dataclass
class Service:
    """The models a server was started with, loaded in the background (`load`), and its limits."""

    models: list[str]
    open_options: dict = field(default_factory=dict)  # `dtg_cli.api.open_model`'s quant, n_gpu_layers, threads
    worker_options: dict = field(default_factory=dict)  # `Worker`'s parallel, context, max_queue
    limits: Limits = field(default_factory=Limits)
    workers: dict[str, Worker] = field(default_factory=dict)
    loading: bool = True
    load_error: BaseException | None = None
    on_load_error: Any = None  # called (from the loading thread) when a model cannot be loaded
    on_ready: Any = None  # called (from the loading thread) when every model is loaded
    http: Counter = field(default_factory=Counter)  # (route, status) -> requests

    def load(self) -> None:
        """Load every model, in order; the server answers 503 until all are."""
        from dtg_cli.api import open_model

        try:
            for name in self.models:
                generator = open_model(name, **self.open_options)
                if generator.name in self.workers:
                    generator.close()
                    raise DtgError(f"{name}: a model named {generator.name} is already loaded")
                self.workers[generator.name] = Worker(generator, **self.worker_options)
                log.info(f"{generator.name}: loaded in {generator.load_s:.2f} s ({generator.format.name} prompt)")
            self.loading = False
            if self.on_ready is not None:
                self.on_ready()
        except BaseException as e:
            self.load_error = e
            if self.on_load_error is not None:
                self.on_load_error(e)

    def close(self, timeout: float | None = None) -> None:
        for worker in self.workers.values():
            worker.close(timeout)

    def worker(self, name: str | None, param: str = "model") -> Worker:
        if self.loading:
            raise ApiError(
                503, "the models are still loading; GET /health says when they are ready", "server_error", headers={"Retry-After": "1"}
            )
        if name is None:
            return next(iter(self.workers.values()))
        if name not in self.workers:
            raise ApiError(
                404, f"model {name!r} is not served here; this server has {', '.join(self.workers)}", "not_found_error", param=param
            )
        return self.workers[name]


def create_app(service: Service) -> Starlette:
    """The ASGI app of a service."""
    api = _Api(service)
    routes = [
        Route("/", api.page, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/generate", api.generate, methods=["POST"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/tags/check", api.check, methods=["POST"]),
    ]
    middleware = []
    if service.limits.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(service.limits.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    middleware.append(Middleware(_Guard, service=service))

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=service.load, name="dtg-load", daemon=True).start()
        yield
        await asyncio.to_thread(service.close)

    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )


def _answer(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(request, exc: ApiError) -> Response:
    return _answer(exc)


async def _http_error(request, exc: HTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail)
    )
    return _answer(ApiError(exc.status_code, message, kind, headers=dict(exc.headers or {})))


class _Guard:
    """The bearer key, checked in constant time on every route but OPEN_PATHS; and the count of answers
    per route and status for /metrics."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        key = service.limits.api_key
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = []

        async def counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            if self.key is not None and path not in OPEN_PATHS and scope["method"] != "OPTIONS":
                given = dict(scope["headers"]).get(b"authorization", b"")
                scheme, _, token = given.partition(b" ")
                if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                    error = ApiError(
                        401,
                        "a valid API key is needed: Authorization: Bearer KEY",
                        "authentication_error",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                    return await _answer(error)(scope, receive, counted)
            await self.app(scope, receive, counted)
        finally:
            self.service.http[(route, status[0] if status else 499)] += 1


ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/generate", "/v1/chat/completions", "/v1/completions", "/v1/tags/check")


class _Api:
    def __init__(self, service: Service):
        self.service = service

    # -- reading --

    async def body(self, request: HttpRequest) -> Any:
        """The JSON body, at most `max_body` bytes (413 past it)."""
        limit = self.service.limits.max_body
        size = 0
        chunks = []
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > DRAIN_LIMIT:
                break
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes (dtg serve --max-body)", headers={"Connection": "close"})
        try:
            return loads(b"".join(chunks).decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text") from None
        except (BadJSON, ValueError) as e:
            raise ApiError(400, f"the body is not JSON: {e}") from None

    # -- routes --

    async def page(self, request: HttpRequest) -> Response:
        return HTMLResponse(resources.files("dtg_cli.serve").joinpath("page.html").read_text(encoding="utf-8"))

    async def health(self, request: HttpRequest) -> Response:
        s = self.service
        if s.load_error is not None:
            return JSONResponse({"status": "failed", "error": str(s.load_error)}, status_code=503)
        if s.loading:
            return JSONResponse({"status": "loading", "models": list(s.workers)}, status_code=503)
        failed = {name: str(w.failed) for name, w in s.workers.items() if w.failed is not None}
        if failed:
            return JSONResponse({"status": "failed", "errors": failed}, status_code=503)
        return JSONResponse({"status": "ok", "models": list(s.workers)})

    async def models(self, request: HttpRequest) -> Response:
        self.service.worker(None)  # 503 while loading
        return JSONResponse({"object": "list", "data": [describe(w) for w in self.service.workers.values()]})

    async def metrics(self, request: HttpRequest) -> Response:
        return PlainTextResponse(prometheus(self.service), media_type="text/plain; version=0.0.4")

    async def check(self, request: HttpRequest) -> Response:
        body = await self.body(request)
        if not isinstance(body, dict) or set(body) - {"tags", "model"}:
            raise ApiError(400, 'the body is {"tags": "...", "model": optional}')
        worker = self.service.worker(body.get("model"))
        tags = body.get("tags")
        if not isinstance(tags, str):
            raise ApiError(400, "tags: a string is required", param="tags")
        try:
            rows = check_tags(tags, worker.generator.tokenizer.vocabulary)
        except DtgError as e:
            raise api_error(e) from None
        return _json({"model": worker.name, "tags": rows})

    async def generate(self, request: HttpRequest) -> Response:
        parsed = parse_generate(await self.body(request))
        worker = self._checked(parsed)
        if parsed.stream:
            return self._stream(worker, parsed, request, self._dtg_events(parsed))
        results = await self._results(worker, parsed, request)
        if results is None:
            return Response(status_code=CLIENT_GONE)
        records = [[result_record(r, parsed.style) for r in per] for per in results]
        return _json({"results": records if parsed.many else records[0]})

    async def chat(self, request: HttpRequest) -> Response:
        return await self._openai(request, chat=True)

    async def completions(self, request: HttpRequest) -> Response:
        return await self._openai(request, chat=False)

    async def _openai(self, request: HttpRequest, chat: bool) -> Response:
        body = await self.body(request)
        parsed = parse_chat(body) if chat else parse_completion(body)
        worker = self._checked(parsed)
        reply = Reply(chat, worker.name, parsed.requests[0].num)
        if parsed.stream:
            return self._stream(worker, parsed, request, self._openai_events(parsed, reply, wants_usage(body)))
        results = await self._results(worker, parsed, request)
        if results is None:
            return Response(status_code=CLIENT_GONE)
        return _json(reply.whole(results, parsed.style))

    # -- jobs --

    def _checked(self, parsed: Parsed) -> Worker:
        worker = self.service.worker(parsed.model)
        for i, r in enumerate(parsed.requests):
            try:
                worker.generator.check(r)
            except DtgError as e:
                raise api_error(e, f"requests[{i}]." if parsed.many else "") from None
        return worker

    def _timed_out(self) -> ApiError:
        return ApiError(504, f"no answer within {self.service.limits.request_timeout:g} s (dtg serve --request-timeout)", "timeout_error")

    def _submit(self, worker: Worker, parsed: Parsed, streaming: bool) -> tuple[Job, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(parsed.requests, lambda event: loop.call_soon_threadsafe(events.put_nowait, event), streaming)
        try:
            worker.submit(job)
        except DtgError as e:
            raise api_error(e) from None
        return job, events

    async def _results(self, worker: Worker, parsed: Parsed, request: HttpRequest) -> list[list] | None:
        """Every result of a job that does not stream, per request in variant order (None: the client has
        gone, and the job with it); the first error ends it."""
        job, events = self._submit(worker, parsed, streaming=False)
        results: list[list] = [[None] * r.num for r in parsed.requests]
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            deadline = time.monotonic() + self.service.limits.request_timeout
            while True:
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait(
                    {getter, gone}, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if gone in done:
                        return None
                    raise self._timed_out()
                event: Event = getter.result()
                if event.kind == "result":
                    results[event.request][event.variant] = event.value
                elif event.kind == "error":
                    raise api_error(event.value, f"requests[{event.request}]." if parsed.many else "")
                elif event.kind == "done":
                    return results
        finally:
            gone.cancel()
            if job.remaining > 0:
                job.cancel()

    def _stream(self, worker: Worker, parsed: Parsed, request: HttpRequest, shaper) -> Response:
        """An event stream: the job's events, shaped by `shaper` (a generator that is sent each event and
        yields the text to send), then its end."""
        job, events = self._submit(worker, parsed, streaming=True)
        timeout = self.service.limits.request_timeout

        async def body():
            deadline = time.monotonic() + timeout
            next(shaper)
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        yield _sse(self._timed_out().body(), "error")
                        break
                    try:
                        event = await asyncio.wait_for(events.get(), min(left, HEARTBEAT_S))
                    except TimeoutError:
                        yield ": waiting\n\n"
                        continue
                    text = shaper.send(event)
                    if text:
                        yield text
                    if event.kind == "done":
                        break
            finally:
                if job.remaining > 0:
                    job.cancel()

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _dtg_events(self, parsed: Parsed):
        """dtg's own events: start, tag, nl, result, error, then done; each with `request`, `variant` and
        `text`, the piece of the result's line it adds (`dtg_cli.serve.lines`)."""
        lines: dict[tuple[int, int], LineStream] = {}
        event: Event = yield
        while True:
            unit = (event.request, event.variant)
            data: dict[str, Any] = {"request": event.request, "variant": event.variant}
            if event.kind == "start":
                lines[unit] = LineStream(parsed.style)
                out = _sse({**data, "text": lines[unit].start(event.value)}, "start")
            elif event.kind == "tag":
                out = _sse({**data, "tag": parsed.style.tag(event.value, lines[unit].layout), "text": lines[unit].tag(event.value)}, "tag")
            elif event.kind == "nl":
                out = _sse({**data, "nl": event.value, "text": lines[unit].nl(event.value)}, "nl")
            elif event.kind == "result":
                record = result_record(event.value, parsed.style)
                rest = _rest(lines.pop(unit, None), parsed.style, record["text"])
                out = _sse({**data, "text": rest, "result": record, "timings": event.value.timings}, "result")
            elif event.kind == "error":
                out = _sse({**data, **api_error(event.value, f"requests[{event.request}]." if parsed.many else "").body()}, "error")
            else:
                out = _sse({}, "done")
            event = yield out

    def _openai_events(self, parsed: Parsed, reply: Reply, with_usage: bool):
        """OpenAI's stream: per choice, a first chunk (the role), content deltas, a last chunk with its
        finish reason; the usage chunk if asked for; then [DONE]. An error ends the stream with an error object."""
        lines: dict[tuple[int, int], LineStream] = {}
        results = []
        event: Event = yield
        while True:
            r, v = event.request, event.variant
            out = ""
            if event.kind == "start":
                lines[(r, v)] = LineStream(parsed.style)
                text = lines[(r, v)].start(event.value)
                out = _data(reply.chunk(r, v, text if reply.chat else None, role=True)) if reply.chat else ""
                if text and not reply.chat:
                    out = _data(reply.chunk(r, v, text))
            elif event.kind in ("tag", "nl"):
                text = getattr(lines[(r, v)], event.kind)(event.value)
                out = _data(reply.chunk(r, v, text)) if text else ""
            elif event.kind == "result":
                results.append(event.value)
                rest = _rest(lines.pop((r, v), None), parsed.style, event.value.written(parsed.style)["text"])
                out = _data(reply.chunk(r, v, rest, finish=finish_reason(event.value)))
            elif event.kind == "error":
                out = _data(api_error(event.value).body())
            else:
                out = (_data(reply.usage_chunk(results)) if with_usage else "") + "data: [DONE]\n\n"
            event = yield out


def _rest(line: LineStream | None, style, text: str) -> str:
    """The last piece of a streamed line: what its finished `text` adds to the pieces already sent."""
    rest = (line or LineStream(style)).finish(text)
    if rest is None:  # not expected: the pieces are the line's own parts
        log.error(f"a streamed line {line.sent!r} is not the start of its result {text!r}")
        return ""
    return rest


async def _disconnected(request: HttpRequest) -> None:
    """Returns when the client has gone (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _json(value: Any) -> Response:
    return Response(json_text(value), media_type="application/json")


def _sse(data: Any, event: str) -> str:
    return f"event: {event}\ndata: {json_text(data)}\n\n"


def _data(data: Any) -> str:
    return f"data: {json_text(data)}\n\n"


def describe(worker: Worker) -> dict:
    """A loaded model as /v1/models lists it: OpenAI's fields, then dtg's: family, prompt format, the
    settings it takes (from the settings table), their defaults, its tasks (TIPO) and the run's sizes."""
    g = worker.generator
    accepts = g.format.accepts
    options = {}
    for s in SETTINGS:
        if s.group == "condition" and s.name not in accepts and not (s.name in ("width", "height") and "aspect_ratio" in accepts):
            continue
        options[s.name] = {
            "kind": s.kind,
            "group": s.group,
            "help": s.help,
            **({"choices": list(s.choices)} if s.choices else {}),
            **({"limits": s.limits} if s.limits else {}),
        }
    conditions = {
        "rating": DEFAULT_RATING,
        "aspect_ratio": DEFAULT_ASPECT_RATIO,
        "length": DEFAULT_LENGTH,
        "identity": DEFAULT_IDENTITY,
        "write": "tags",
    }
    defaults = {k: v for k, v in conditions.items() if k in accepts}
    defaults.update({k: v for k, v in vars(g.defaults).items() if k != "seed"})
    defaults.update(retries=g.family.max_retries, num=1, auto=True)
    entry = {
        "id": worker.name,
        "object": "model",
        "created": 0,
        "owned_by": "dtg",
        "family": g.family.name,
        "prompt_format": g.format.name,
        "options": options,
        "defaults": defaults,
        "parallel": worker.parallel,
        "context": worker.context,
    }
    if "write" in accepts:
        entry["tasks"] = list(next(s for s in SETTINGS if s.name == "write").choices)
    return entry


METRICS = (  # per model: name, type, help, the `Worker.snapshot` key
    ("dtg_requests_total", "counter", "Requests taken by a model (a body of several requests counts once).", "requests"),
    ("dtg_requests_rejected_total", "counter", "Requests refused because the model's queue was full (429).", "rejected"),
    ("dtg_results_total", "counter", "Results generated.", "results"),
    ("dtg_errors_total", "counter", "Requests that could not start (a prompt the model cannot take).", "errors"),
    ("dtg_dropped_total", "counter", "Results given up because their client had gone.", "dropped"),
    ("dtg_tokens_total", "counter", "Tokens generated by finished results.", "tokens"),
    ("dtg_queue_depth", "gauge", "Results waiting for a slot.", "queued"),
    ("dtg_active_sequences", "gauge", "Sequences being decoded.", "active"),
    ("dtg_tokens_per_second", "gauge", "Tokens per second of the results finished in the last 10 seconds.", "tokens_per_s"),
)


def prometheus(service: Service) -> str:
    """/metrics in Prometheus' text format: per model, requests, results, queue depth, active sequences,
    tokens and tokens/s; per route, answers by status."""
    snapshots = {model: worker.snapshot() for model, worker in list(service.workers.items())}
    out = []
    for name, kind, help_text, key in METRICS:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        for model, values in snapshots.items():
            value = values[key]
            out.append(f'{name}{{model="{_label(model)}"}} {round(value, 3) if isinstance(value, float) else value}\n')
    out.append("# HELP dtg_http_requests_total HTTP answers by route and status.\n# TYPE dtg_http_requests_total counter\n")
    for (route, status), n in sorted(service.http.items()):
        out.append(f'dtg_http_requests_total{{route="{route}",status="{status}"}} {n}\n')
    return "".join(out)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
