"""The few calls the node makes to `dtg serve`, on the standard library alone, with every failure turned
into one sentence for the user (`DtgServerError`)."""

import json
import os
import urllib.error
import urllib.request

DEFAULT_URL = os.environ.get("DTG_SERVER_URL", "http://127.0.0.1:8765")


class DtgServerError(RuntimeError):
    """What ComfyUI shows on the node: one sentence."""


def _request(url: str, path: str, body=None, api_key: str = "", timeout: float = 120.0):
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    key = api_key or os.environ.get("DTG_API_KEY", "")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise DtgServerError(_answered(url, e, bool(key))) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):  # raised as it is while waiting for the answer, in a URLError while connecting
            raise DtgServerError(f"dtg serve at {url} did not answer within {timeout:g} s") from None
        raise DtgServerError(f"no dtg server at {url} ({reason}): start it with `dtg serve -m MODEL`") from None
    except ValueError:
        raise DtgServerError(f"{url} answered, but not as dtg serve does (is it the right address?)") from None


def _answered(url: str, e: urllib.error.HTTPError, sent_key: bool) -> str:
    try:
        message = json.loads(e.read().decode("utf-8"))["error"]["message"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
        message = f"HTTP {e.code} {e.reason}"
    if e.code == 401:
        what = "was refused" if sent_key else "is needed"
        return f"dtg serve at {url}: its API key {what}; set DTG_API_KEY in ComfyUI's environment or the node's api_key input"
    return f"dtg serve: {message}"


def models(url: str, api_key: str = "", timeout: float = 2.0) -> list:
    """The served models, as GET /v1/models lists them."""
    return _request(url, "/v1/models", api_key=api_key, timeout=timeout)["data"]


def generate(url: str, model: str, requests: list, api_key: str = "", timeout: float = 120.0) -> list:
    """The result records of each request, in order (one body: decoded together)."""
    return _request(url, "/v1/generate", {"model": model, "requests": requests}, api_key, timeout)["results"]
