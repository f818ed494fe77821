"""Request bodies read into requests, with the same checks as the CLI's (the one settings table), and every
error as the JSON body the API answers with.

A body of `POST /v1/generate` holds the fields of a `dtg batch` JSONL record (`tags`, the conditions, the
sampling settings, `num` or `n`, `seed`, `ban`, TIPO's `nl` and `write`), the output options of
`dtg generate` (`order`, `template`, `escape`, `underscores`), `model` and `stream`; or `requests`, a list of
such records that share the body's other fields as their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dtg_cli.batch.tasks import layered_request, unknown_fields
from dtg_cli.errors import DtgError, SettingError, UsageError
from dtg_cli.rendering import Style, style
from dtg_cli.settings import SETTING, Request, shown

MAX_REQUESTS = 1000  # requests in one body
MAX_RESULTS = 1000  # results of one body, all requests together (`num`'s own bound)
SHAPING = {"order": str, "template": str, "escape": bool, "underscores": bool}  # output options
REQUEST_FIELDS = frozenset({*SETTING, "n"})  # what each request of a body may hold
BODY_FIELDS = frozenset({*REQUEST_FIELDS, *SHAPING, "model", "stream", "requests"})


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param"}}` with an HTTP status."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


def api_error(e: DtgError, where: str = "") -> ApiError:
    """A DtgError as the API answers it: a setting's error names it as `param` (`where` leads to it in a
    body of several requests), a full queue is 429, a stopped model 503."""
    from dtg_cli.serve.workers import Busy, Stopped

    if isinstance(e, Busy):
        return ApiError(429, str(e), "rate_limit_error", headers={"Retry-After": "1"})
    if isinstance(e, Stopped):
        return ApiError(503, str(e), "server_error")
    if isinstance(e, SettingError):
        return ApiError(400, str(e), param=where + e.names[0] if e.names else (where.rstrip(".") or None))
    if isinstance(e, UsageError):
        return ApiError(400, str(e).removeprefix("--"), param=where.rstrip(".") or None)
    return ApiError(500, str(e), "server_error")


def unknown_field(name: str, known: frozenset[str], where: str = "") -> ApiError:
    """A field no request has, worded as a batch record's (`batch.tasks.unknown_fields`)."""
    return ApiError(400, unknown_fields([name], known), param=where + str(name))


@dataclass
class Parsed:
    """A body of /v1/generate, read."""

    model: str | None  # None: the server's first model
    requests: list[Request]
    style: Style = field(default_factory=Style)
    stream: bool = False
    many: bool = False  # the body gave `requests`: the answer holds a list per request


def settings_of(fields: dict, where: str = "") -> dict:
    """The settings of one request, type-checked (`n` is `num`)."""
    values = {}
    for name, value in fields.items():
        if name == "n":
            if "num" in fields:
                raise ApiError(400, "give n or num, not both", param=where + "n")
            name = "num"
        try:
            SETTING[name].check_type(value)
        except SettingError as e:
            raise api_error(e, where) from None
        values[name] = value
    return values


def parse_generate(body: Any) -> Parsed:
    """A /v1/generate body read into requests; raises ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for name in body:
        if name not in BODY_FIELDS:
            raise unknown_field(name, BODY_FIELDS)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model: {shown(model)} must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream: {shown(stream)} must be true or false", param="stream")
    shaping = {}
    for name, kind in SHAPING.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)):
            raise ApiError(400, f"{name}: {shown(value)} must be {'true or false' if kind is bool else 'a string'}", param=name)
        shaping[name] = value
    try:
        shape = style(shaping["order"], shaping["template"], shaping["escape"], bool(shaping["underscores"]))
    except UsageError as e:
        raise ApiError(400, str(e).removeprefix("--"), param="template" if "template" in str(e) else "order") from None
    base = settings_of({k: v for k, v in body.items() if k in REQUEST_FIELDS})
    items = body.get("requests")
    if items is None:
        requests = [_request([base])]
    else:
        if not isinstance(items, list) or not items:
            raise ApiError(400, "requests: must be a non-empty list of objects", param="requests")
        if len(items) > MAX_REQUESTS:
            raise ApiError(400, f"requests: {len(items)} requests; a body holds at most {MAX_REQUESTS}", param="requests")
        requests = []
        for i, item in enumerate(items):
            where = f"requests[{i}]."
            if not isinstance(item, dict):
                raise ApiError(400, f"requests[{i}]: must be an object", param=where.rstrip("."))
            for name in item:
                if name not in REQUEST_FIELDS:
                    raise unknown_field(name, REQUEST_FIELDS, where)
            requests.append(_request([base, settings_of(item, where)], where))
    total = sum(r.num for r in requests)
    if total > MAX_RESULTS:
        raise ApiError(400, f"{total} results asked for; a body asks for at most {MAX_RESULTS}", param="num")
    return Parsed(model, requests, shape, stream, items is not None)


def _request(layers: list[dict], where: str = "") -> Request:
    try:
        return layered_request(layers)
    except UsageError as e:
        raise api_error(e, where) from None
