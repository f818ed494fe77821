"""A bounded load test of `dtg serve`: 2,048 requests from 64 concurrent clients, mixed streaming and not,
over two models, each answered with the results the CLI gives for its seed; the only errors are the
deliberate ones."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dtg_cli.client import Client, ServerError
from tests.servers import Served
from tests.test_hostile import dtg

CLIENTS = 64
PER_CLIENT = 32  # 2,048 requests
PROMPTS = ["1girl, solo", "cat ears, smile", "scenery, (flower:1.2)", "1boy, hat, BREAK, night"]
SEEDS = range(4)
PLACE = ("id", "record", "line", "variant")  # the batch record's place, before the result record's own keys


def plan(i: int, names: list[str]) -> dict:
    """The i-th request: a model, a prompt, a seed, one or two results; every 97th is deliberately bad."""
    fields = {"model": names[i % 2], "tags": PROMPTS[(i // 2) % len(PROMPTS)], "seed": SEEDS[(i // 8) % len(SEEDS)], "max_new_tokens": 12}
    if i % 5 == 0:
        fields["num"] = 2
    if i % 97 == 0:
        fields["rating"] = "pg"
    return fields


def key(fields: dict) -> tuple:
    return fields["model"], fields["tags"], fields["seed"], fields.get("num", 1)


@pytest.mark.slow
def test_two_thousand_requests_from_64_clients(ggufs, tmp_path):
    models = {"dart": ggufs["dart-moe"]["q8_0"], "tipo": ggufs["tipo"]["q8_0"]}
    names = [m.stem for m in models.values()]
    # The CLI's results for every distinct request: one `dtg batch` per model, each record with its own seed.
    expected: dict[tuple, list[str]] = {}
    for path in models.values():
        every = (plan(i, names) for i in range(CLIENTS * PER_CLIENT))
        records = sorted({key(f): f for f in every if f["model"] == path.stem and "rating" not in f}.values(), key=key)
        source = tmp_path / f"{path.stem}.jsonl"
        source.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "model"}) + "\n" for r in records))
        out = tmp_path / f"{path.stem}.out.jsonl"
        done = dtg("batch", source, "-o", out, "-m", path, "--parallel", "2")
        assert done.returncode == 0, done.stderr.decode()
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        for r in records:
            expected[key(r)] = [
                json.dumps({k: v for k, v in line.items() if k not in PLACE}) for line in lines if line["line"] == records.index(r) + 1
            ]
    assert len(expected) >= 2 * len(PROMPTS) * len(SEEDS)

    with Served(list(models.values()), "--max-queue", "1024") as server:
        client = Client(server.url, timeout=120)
        failures: list[str] = []
        answered = []
        lock = threading.Lock()

        def one(i: int) -> None:
            fields = plan(i, names)
            tags = fields.pop("tags")
            try:
                if i % 3 == 0:
                    events = list(client.stream(tags, **fields))
                    got = [
                        json.dumps(e.data["result"])
                        for e in sorted((e for e in events if e.kind == "result"), key=lambda e: e.data["variant"])
                    ]
                else:
                    got = [json.dumps(r) for r in client.generate(tags, **fields)]
            except ServerError as e:
                if "rating" in fields and e.param == "rating" and "'pg' is not one of" in e.message:
                    with lock:
                        answered.append(i)
                    return
                with lock:
                    failures.append(f"request {i}: {e.status} {e}")
                return
            with lock:
                answered.append(i)
                if "rating" in fields:
                    failures.append(f"request {i}: a bad rating was accepted")
                elif got != expected[key({**fields, "tags": tags})]:
                    failures.append(f"request {i}: results differ from the CLI's")

        def client_loop(c: int) -> None:
            for n in range(PER_CLIENT):
                one(c * PER_CLIENT + n)

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client_loop, range(CLIENTS)))
        assert failures == []
        assert sorted(answered) == list(range(CLIENTS * PER_CLIENT))
    assert server.process.returncode == 0
