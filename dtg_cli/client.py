"""A client of `dtg serve`, on the standard library alone (it imports nothing else of dtg).

>>> from dtg_cli.client import Client
>>> client = Client("http://127.0.0.1:8765")                      # doctest: +SKIP
>>> client.generate("1girl, cat ears", rating="general", seed=7)[0]["text"]   # doctest: +SKIP
>>> for event in client.stream("1girl", seed=7):                  # doctest: +SKIP
...     print(event.kind, event.data)

`generate` returns the result records `dtg generate --format json` prints; `stream` yields the server's
events (start, tag, nl, result, error, done) as they come. Errors are `ServerError`s, whose message is
the server's; a server that cannot be reached is `Unreachable`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"


class ServerError(Exception):
    """An error answered by the server (`status`, `kind` and `param` as in its JSON error body)."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.param = param
        self.body: Any = None  # the JSON body of the answer, when it had one


class Unreachable(ServerError):
    """No server answers at the URL (not started, wrong address, or a timeout)."""


@dataclass(frozen=True)
class Event:
    """One event of a stream: `kind` (start, tag, nl, result, error, done) and its data."""

    kind: str
    data: dict


class Client:
    """The API of one `dtg serve`. `api_key` defaults to $DTG_API_KEY; `timeout` is per call, in seconds."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("DTG_API_KEY") or None
        self.timeout = timeout

    # -- the API --

    def health(self) -> dict:
        """{"status": "ok" | "loading" | "failed", ...}; a server that is loading is not an error here."""
        try:
            return self._call("GET", "/health")
        except ServerError as e:
            if e.status == 503 and isinstance(e.body, dict):
                return e.body
            raise

    def models(self) -> list[dict]:
        """The models the server has loaded: id, family, options, defaults, tasks (TIPO)."""
        return self._call("GET", "/v1/models")["data"]

    def generate(self, tags: str | list[str] = "", **fields: Any) -> list[dict]:
        """The result records of one request: `fields` are those of a `dtg batch` record (rating, length,
        num or n, seed, ban, nl, write, temperature, ...), `model`, and the output options (order,
        template, escape, underscores)."""
        return self._call("POST", "/v1/generate", {**fields, "tags": tags})["results"]

    def generate_many(self, requests: list[dict], **shared: Any) -> list[list[dict]]:
        """Several requests decoded together, each a dict of fields; `shared` fields are their defaults.
        Returns the result records of each request, in order."""
        return self._call("POST", "/v1/generate", {**shared, "requests": requests})["results"]

    def stream(self, tags: str | list[str] = "", **fields: Any) -> Iterator[Event]:
        """The events of one request as the server sends them, up to and including `done`. An `error`
        event is raised as a ServerError."""
        response = self._open("POST", "/v1/generate", {**fields, "tags": tags, "stream": True})
        with response:
            for kind, data in _events(response):
                if kind == "error":
                    error = data.get("error", {})
                    raise ServerError(error.get("message", "error"), None, error.get("type"), error.get("param"))
                yield Event(kind, data)
                if kind == "done":
                    return

    def check_tags(self, tags: str, model: str | None = None) -> dict:
        """What `dtg tags check --format json` prints, against a served model."""
        return self._call("POST", "/v1/tags/check", {"tags": tags, **({"model": model} if model else {})})

    # -- transport --

    def _open(self, method: str, path: str, body: Any = None):
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise _answered(e) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach dtg serve at {self.url} ({reason}); start it with: dtg serve -m MODEL") from None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as response:
            try:
                return json.loads(response.read().decode("utf-8"))
            except TimeoutError:
                raise Unreachable(f"dtg serve at {self.url} did not answer within {self.timeout:g} s") from None


def _answered(e: urllib.error.HTTPError) -> ServerError:
    """An HTTP error as a ServerError with the server's own message."""
    try:
        body = json.loads(e.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        failure = ServerError(str(error.get("message")), e.code, error.get("type"), error.get("param"))
    else:
        failure = ServerError(f"HTTP {e.code} {e.reason}", e.code)
    failure.body = body
    return failure


def _events(response) -> Iterator[tuple[str, dict]]:
    """Server-Sent Events of a response: (event name, JSON data)."""
    kind, data = "message", []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def generate(tags: str | list[str] = "", *, url: str = DEFAULT_URL, api_key: str | None = None, **fields: Any) -> list[dict]:
    """`Client(url, api_key).generate(tags, **fields)`."""
    return Client(url, api_key).generate(tags, **fields)


def stream(tags: str | list[str] = "", *, url: str = DEFAULT_URL, api_key: str | None = None, **fields: Any) -> Iterator[Event]:
    """`Client(url, api_key).stream(tags, **fields)`."""
    return Client(url, api_key).stream(tags, **fields)
