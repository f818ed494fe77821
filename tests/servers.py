"""`dtg serve` started by a test: loopback only, a free port, waited for with a bound, stopped by the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

READY_S = 90  # the most a test waits for the models to load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A `dtg serve` process over the given models, on 127.0.0.1 and a free port."""

    def __init__(self, models: list[Path | str], *args, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "dtg_cli", "serve", "--port", str(self.port)]
        for model in models:
            command += ["-m", str(model)]
        self.process = subprocess.Popen(
            command + [str(a) for a in args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.stdout = self.stderr = b""

    def wait_ready(self) -> Served:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"dtg serve exited with {self.process.returncode}: {self.stderr.decode()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"dtg serve was not ready within {READY_S} s: {self.stderr.decode()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait (SIGKILL past `timeout`); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate(timeout=30)
        self.stdout += out
        self.stderr += err
        return self.process.returncode

    def __enter__(self) -> Served:
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def call(
    url: str, path: str, body=None, method: str | None = None, headers: dict | None = None, raw: bytes | None = None, timeout: float = 120
):
    """(status, JSON body or text, headers with lower-case names) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, text, head = r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        status, text, head = e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}
    try:
        return status, json.loads(text), head
    except ValueError:
        return status, text, head
