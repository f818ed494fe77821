"""`dtg serve`: results equal to `dtg generate`'s under concurrent load, the API's shapes and errors, the
OpenAI-compatible routes through the official client, the key, limits, disconnects and shutdown."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dtg_cli.client import Client, ServerError, Unreachable
from tests.servers import Served, call, free_port
from tests.test_hostile import dtg

OUTPUT_OPTIONS = ("order", "template", "escape", "underscores")


def flags(fields: dict) -> list[str]:
    """A request's fields as `dtg generate` flags."""
    out = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, list):
            for v in value:
                out += [flag, str(v)]
        else:
            out += [flag, str(value)]
    return out


def cli_records(model: Path, tags: str, fields: dict) -> list[dict]:
    """What `dtg generate --format json` prints for these fields, with its sequences decoded in a batch
    (--parallel 2, as with several results; one result alone takes the one-slot path, docs/determinism.md)."""
    done = dtg("generate", "-m", model, tags, *flags(fields), "--format", "json", "--parallel", "2")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


# Requests of every family that exercise conditions, bans, several results, continuations and TIPO's tasks.
CASES = [
    ("dart", "1girl, cat ears", {"rating": "general", "length": "long", "seed": 1}),
    ("dart", "1girl, solo", {"identity": "strict", "aspect_ratio": "wide", "seed": 2, "num": 2}),
    ("dart", "(1girl:1.2), cat ears, BREAK, smile", {"seed": 3, "ban": ["*hair*", "re:^a"], "max_new_tokens": 32}),
    ("dart", "1girl, flower", {"seed": 4, "order": "category", "underscores": True}),
    ("dantaggen", "1girl, solo", {"seed": 5, "rating": "sensitive", "length": "short"}),
    ("dantaggen", "cat ears", {"seed": 6, "length": "very_long", "num": 2, "temperature": 0.8}),
    ("tipo", "1girl, cat ears", {"seed": 7, "write": "both", "length": "short"}),
    ("tipo", "", {"seed": 8, "nl": "A girl standing in a flower field.", "write": "nl"}),
    ("tipo", "scenery", {"seed": 9, "meta": "highres", "quality": "masterpiece", "num": 2, "max_new_tokens": 48}),
]


@pytest.fixture(scope="module")
def expected(models):
    """`dtg generate`'s records for each case, run as processes (in parallel, two at a time)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda case: cli_records(models[case[0]], case[1], case[2]), CASES))


def test_results_equal_dtg_generate_under_concurrent_requests(served, models, expected):
    client = Client(served.url)

    def ask(i: int) -> tuple[int, list[dict]]:
        family, tags, fields = CASES[i % len(CASES)]
        return i % len(CASES), client.generate(tags, model=models[family].stem, **fields)

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, range(len(CASES) * 6)))  # every case six times, all at once
    for i, records in answers:
        assert json.dumps(records) == json.dumps(expected[i]), CASES[i]


def test_a_body_of_many_requests_answers_each_in_order(served, models, expected):
    dart = [(i, c) for i, c in enumerate(CASES) if c[0] == "dart" and not set(c[2]) & set(OUTPUT_OPTIONS)]
    answer = Client(served.url).generate_many([{"tags": tags, **fields} for _, (_, tags, fields) in dart], model=models["dart"].stem)
    assert [json.dumps(a) for a in answer] == [json.dumps(expected[i]) for i, _ in dart]


def test_a_stream_sends_each_tag_then_the_result_record(served, models, expected):
    client = Client(served.url)
    for i, (family, tags, fields) in enumerate(CASES):
        events = list(client.stream(tags, model=models[family].stem, **fields))
        assert events[-1].kind == "done"
        results = [e.data for e in events if e.kind == "result"]
        assert [r["result"] for r in sorted(results, key=lambda r: r["variant"])] == expected[i]
        for r in results:
            unit = [e.data for e in events if e.kind != "done" and e.data["variant"] == r["variant"]]
            assert unit[0] is not None and events.index(next(e for e in events if e.kind == "start")) < events.index(events[-1])
            # The pieces of a line add up to the line; the tags come one event each, as sampled.
            assert "".join(d["text"] for d in unit) == r["result"]["text"]
            streamed = [d["tag"] for d in unit if "tag" in d]
            assert streamed == r["result"]["new_tags"]
            if any("nl" in d for d in unit):
                assert r["result"]["nl"].startswith("".join(d["nl"] for d in unit if "nl" in d).strip()[:20])


def test_models_health_and_metrics(served, models):
    status, body, _ = call(served.url, "/health")
    assert status == 200 and body == {"status": "ok", "models": [m.stem for m in models.values()]}
    status, body, _ = call(served.url, "/v1/models")
    by_id = {m["id"]: m for m in body["data"]}
    assert body["object"] == "list" and set(by_id) == {m.stem for m in models.values()}
    dart, tipo, dantaggen = by_id[models["dart"].stem], by_id[models["tipo"].stem], by_id[models["dantaggen"].stem]
    assert (dart["family"], tipo["family"], dantaggen["family"]) == ("dart-v2", "tipo", "dantaggen")
    assert "identity" in dart["options"] and "nl" not in dart["options"] and "artist" not in dart["options"]
    assert tipo["tasks"] == ["tags", "nl", "both"] and "tasks" not in dart
    assert tipo["defaults"]["temperature"] == 0.35 and dart["defaults"]["top_k"] == 100 and dart["defaults"]["rating"] == "sfw"
    assert dart["options"]["rating"]["choices"][:2] == ["sfw", "general"]
    status, text, headers = call(served.url, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("dtg_requests_total", "dtg_queue_depth", "dtg_active_sequences", "dtg_tokens_per_second", "dtg_tokens_total"):
        assert f'{name}{{model="{models["dart"].stem}"}} ' in text
    assert 'dtg_http_requests_total{route="/health",status="200"}' in text


def test_tags_check_is_dtg_tags_check(served, models):
    status, body, _ = call(served.url, "/v1/tags/check", {"tags": "1girl, cat_ears, notatag", "model": models["dart"].stem})
    done = dtg("tags", "check", "1girl, cat_ears, notatag", "-m", models["dart"], "--format", "json")
    assert status == 200 and body == json.loads(done.stdout)


def test_openai_client_chat_and_completions(served, models, expected):
    openai = pytest.importorskip("openai", reason="pip install openai (in the test extra)")
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list().data} == {m.stem for m in models.values()}
    family, tags, fields = CASES[1]  # two results
    name = models[family].stem
    extra = {k: v for k, v in fields.items() if k not in ("seed", "num")}
    chat = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": tags}], seed=fields["seed"], n=2, extra_body=extra
    )
    assert [c.message.content for c in chat.choices] == [r["text"] for r in expected[1]]
    assert [c.index for c in chat.choices] == [0, 1] and chat.choices[0].finish_reason in ("stop", "length")
    ids = sum(len(s["input_ids"]) + len(s["output_ids"]) for r in expected[1] for s in r["steps"])
    assert chat.usage.total_tokens == ids and chat.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": tags}],
        seed=fields["seed"],
        n=2,
        extra_body=extra,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, finishes, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        for c in chunk.choices:
            content[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert content == {0: expected[1][0]["text"], 1: expected[1][1]["text"]} and set(finishes) == {0, 1}
    assert usage.total_tokens == ids
    # TIPO through completions, with a caption: the line is the tags and the caption.
    family, tags, fields = CASES[6]
    completion = client.completions.create(
        model=models[family].stem, prompt=tags, seed=fields["seed"], extra_body={"write": "both", "length": "short"}
    )
    assert completion.choices[0].text == expected[6][0]["text"]
    parts = "".join(
        c.text
        for chunk in client.completions.create(
            model=models[family].stem, prompt=tags, seed=7, stream=True, extra_body={"write": "both", "length": "short"}
        )
        for c in chunk.choices
    )
    assert parts == expected[6][0]["text"]
    with pytest.raises(openai.BadRequestError, match="artist is not used by"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "1girl"}], extra_body={"artist": "wlop"})
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "1girl"}])
    with pytest.raises(openai.BadRequestError, match="unknown field 'presence_penalty'"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "1girl"}], presence_penalty=0.5)


@pytest.mark.parametrize(
    "body, status, fragment, param",
    [
        (b"{not json", 400, "not JSON", None),
        (b"\xff\xfe", 400, "not UTF-8", None),
        (b"[1, 2]", 400, "JSON object", None),
        (b'{"tags": 5}', 400, "tags: 5 must be a string or a list of strings", "tags"),
        (b'{"tags": "1girl", "rating": "pg"}', 400, "rating: 'pg' is not one of", "rating"),
        (b'{"tags": "1girl", "temperature": "hot"}', 400, "temperature: 'hot' must be a number", "temperature"),
        (b'{"tags": "1girl", "ratng": "general"}', 400, "unknown field 'ratng' (did you mean rating?)", "ratng"),
        (b'{"tags": "1girl", "num": 5000}', 400, "num: 5000 must be between 1 and 1000", "num"),
        (b'{"tags": "1girl", "max_new_tokens": 100000}', 400, "max_new_tokens", "max_new_tokens"),
        (b'{"tags": "1girl", "artist": "wlop"}', 400, "artist is not used by", "artist"),
        (b'{"tags": "1girl", "model": "../../etc/passwd"}', 404, "is not served here", "model"),
        (b'{"tags": "1girl", "ban": "re:("}', 400, "ban", "ban"),
        (b'{"requests": [{"tags": "a"}, {"tags": "b", "rating": 3}]}', 400, "rating: 3 must be a string", "requests[1].rating"),
        (b'{"requests": [{"tags": "a", "model": "x"}]}', 400, "unknown field 'model'", "requests[0].model"),
        (b'{"tags": "1girl", "stream": "yes"}', 400, "stream", "stream"),
        (b'{"tags": "1girl", "order": "random"}', 400, "order", "order"),
        (b'{"tags": "1girl", "seed": 4294967295, "num": 2}', 400, "runs past the largest seed", "seed"),
    ],
)
def test_bad_bodies_get_one_clear_json_error(served, models, body, status, fragment, param):
    if b'"model"' not in body and b"requests" not in body:
        body = (
            body.replace(b'{"tags"', b'{"model": "' + models["dart"].stem.encode() + b'", "tags"') if body.startswith(b'{"tags"') else body
        )
    got, answer, _ = call(served.url, "/v1/generate", raw=body)
    assert got == status, answer
    assert set(answer) == {"error"} and fragment in answer["error"]["message"], answer
    assert answer["error"]["param"] == param and answer["error"]["type"]


def test_routes_sizes_and_methods(served):
    status, body, _ = call(served.url, "/v2/nothing")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, body, _ = call(served.url, "/v1/generate", method="GET")
    assert status == 405 and "GET is not allowed" in body["error"]["message"]
    # A 10 MB body: 413, and the server goes on.
    status, body, _ = call(served.url, "/v1/generate", raw=b'{"tags": "' + b"a" * (10 << 20) + b'"}')
    assert status == 413 and "--max-body" in body["error"]["message"]
    assert call(served.url, "/health")[0] == 200


def test_a_slow_client_does_not_hold_up_the_others(served, models):
    """A client that sends its body a byte at a time, while others are answered."""
    slow = socket.create_connection(("127.0.0.1", served.port))
    body = json.dumps({"tags": "1girl", "seed": 1, "model": models["dart"].stem}).encode()
    slow.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    client = Client(served.url)
    for i, byte in enumerate(body):
        slow.sendall(bytes([byte]))
        if i % 10 == 0:
            assert client.generate("cat ears", model=models["dart"].stem, seed=i, max_new_tokens=8)
    answer = slow.makefile("rb").read(12)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 200")


def test_the_client_says_when_no_server_answers():
    with pytest.raises(Unreachable, match=r"cannot reach dtg serve at http://127.0.0.1:\d+ .*dtg serve -m MODEL"):
        Client(f"http://127.0.0.1:{free_port()}").generate("1girl")


def test_an_api_key_guards_every_route_but_health_and_the_page(models):
    with Served([models["dart"]], env={"DTG_API_KEY": "s3cret"}) as server:
        for path in ("/v1/models", "/metrics"):
            assert call(server.url, path)[0] == 401
            assert call(server.url, path, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert call(server.url, path, headers={"Authorization": "Bearer s3cret"})[0] == 200
        status, body, headers = call(server.url, "/v1/generate", {"tags": "1girl"})
        assert status == 401 and body["error"]["type"] == "authentication_error" and headers["www-authenticate"] == "Bearer"
        assert call(server.url, "/health")[0] == 200 and call(server.url, "/")[0] == 200
        with pytest.raises(ServerError, match="API key") as e:
            Client(server.url, api_key="nope").generate("1girl")
        assert e.value.status == 401
        assert Client(server.url, api_key="s3cret").generate("1girl", seed=1)[0]["seed"] == 1
    assert server.process.returncode == 0


def test_a_host_other_machines_reach_needs_a_key(models):
    done = dtg("serve", "-m", models["dart"], "--host", "0.0.0.0", "--port", free_port())
    assert done.returncode == 2 and b"--api-key" in done.stderr and len(done.stderr.decode().strip().splitlines()) == 1


def test_models_that_cannot_be_served_are_one_line(models, tmp_path):
    done = dtg("serve", "-m", "no-such-model", "--port", free_port())
    assert done.returncode != 0 and done.stderr.decode().strip().count("\n") == 0 and b"no-such-model" in done.stderr
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    server = Served([bad])
    assert server.process.wait(timeout=60) == 1  # exits by itself: the model does not load
    server.stop()
    assert b"broken.gguf" in server.stderr.splitlines()[-1] and b"Traceback" not in server.stderr
    with socket.socket() as s:  # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen()
        done = dtg("serve", "-m", models["dart"], "--port", s.getsockname()[1])
    assert done.returncode == 1 and b"cannot listen on 127.0.0.1" in done.stderr


def test_cors_is_off_unless_an_origin_is_named(models, served):
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    _, _, headers = call(served.url, "/v1/models", headers={"Origin": "http://ui.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    with Served([models["dart"]], "--cors-origin", "http://ui.example") as server:
        status, _, headers = call(server.url, "/v1/generate", method="OPTIONS", headers=preflight)
        assert status == 200 and headers["access-control-allow-origin"] == "http://ui.example"
        status, _, headers = call(server.url, "/v1/generate", method="OPTIONS", headers={**preflight, "Origin": "http://evil.example"})
        assert status == 400


def _metric(url: str, name: str) -> float:
    text = call(url, "/metrics")[1]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_a_full_queue_is_429_and_a_slow_request_504(models):
    with Served([models["dantaggen"]], "--parallel", "2", "--max-queue", "1", "--shutdown-timeout", "1") as server:
        held: list = []  # the request that holds the one place of the queue; it may be cut when the server stops

        def hold() -> None:
            try:
                held.append(call(server.url, "/v1/generate", {"tags": "1girl", "num": 40, "max_new_tokens": 400, "length": "very_long"})[0])
            except OSError as e:
                held.append(e)

        long = threading.Thread(target=hold)
        long.start()
        deadline = time.monotonic() + 30
        while _metric(server.url, "dtg_active_sequences") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body, headers = call(server.url, "/v1/generate", {"tags": "1girl"})
        assert status == 429 and headers["retry-after"] == "1" and "--max-queue" in body["error"]["message"]
        assert _metric(server.url, "dtg_requests_rejected_total") == 1
    long.join(60)
    assert held and not long.is_alive()
    with Served([models["dantaggen"]], "--parallel", "2", "--request-timeout", "0.2") as server:
        status, body, _ = call(server.url, "/v1/generate", {"tags": "1girl", "num": 40, "max_new_tokens": 400, "length": "very_long"})
        assert status == 504 and "--request-timeout" in body["error"]["message"]
        deadline = time.monotonic() + 30  # the timed-out request's sequences are dropped
        while _metric(server.url, "dtg_active_sequences") + _metric(server.url, "dtg_queue_depth") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(server.url, "dtg_active_sequences") == 0 and _metric(server.url, "dtg_dropped_total") > 0


def test_a_client_that_leaves_frees_its_slots(models):
    with Served([models["dantaggen"]], "--parallel", "4") as server:
        for streaming in (True, False):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            body = {"tags": "1girl", "num": 4, "max_new_tokens": 4000 // 10, "length": "very_long", "stream": streaming, "seed": 1}
            connection.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
            if streaming:
                response = connection.getresponse()
                assert response.status == 200 and response.readline().startswith(b"event: start")
            else:
                deadline = time.monotonic() + 30
                while _metric(server.url, "dtg_active_sequences") < 4 and time.monotonic() < deadline:
                    time.sleep(0.01)
            before = _metric(server.url, "dtg_dropped_total")
            connection.sock.shutdown(socket.SHUT_RDWR)
            connection.close()
            deadline = time.monotonic() + 30
            while _metric(server.url, "dtg_active_sequences") > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _metric(server.url, "dtg_active_sequences") == 0 and _metric(server.url, "dtg_dropped_total") > before
        # The slots are free: four sequences run together again.
        records = Client(server.url).generate("cat ears", num=4, seed=3, max_new_tokens=16)
        assert [r["seed"] for r in records] == [3, 4, 5, 6]
    assert b"Traceback" not in server.stderr, server.stderr.decode()  # a client that leaves is no error of the server


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(models):
    server = Served([models["dart"]], "--parallel", "2").wait_ready()
    client = Client(server.url)
    answers: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            answers[i] = client.generate("1girl", seed=i, num=8, max_new_tokens=64)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            answers[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while _metric(server.url, "dtg_requests_total") < 12 and time.monotonic() < deadline:  # all taken, most waiting
        time.sleep(0.01)
    assert _metric(server.url, "dtg_queue_depth") > 0
    server.signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert server.stop() == 0, server.stderr.decode()
    assert all(isinstance(a, list) and len(a) == 8 for a in answers.values()), answers
    assert sorted(answers) == list(range(12))
    with pytest.raises(Unreachable):
        client.generate("1girl")


def test_the_client_needs_only_the_standard_library():
    import subprocess
    import sys

    code = (  # what importing it adds to what the interpreter's start-up loaded (site hooks, an editable install's finder)
        "import sys; before = set(sys.modules); import dtg_cli.client; "
        "others = sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names and m.split('.')[0] != 'dtg_cli'); "
        "print(others)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
