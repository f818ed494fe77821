"""Time `dtg serve` on full-size random-weight Dart v2 MoE (with a TIPO-200M-shaped model loaded beside it),
Q8_0, against `dtg batch` and one `dtg generate` process per prompt:

    python -m benchmarks.serve_bench [--workdir DIR] [--threads 2] [--clients 32] [--per-client 4]
                                     [--single-runs 15] [--new-tokens 40]

1. A warm single request (streamed), repeated: the time from sending it to its last tag and to its result
   record, against the decode time the server reports for it (its `timings`: from its slot to its end);
   the difference is the server's overhead (HTTP, JSON, queueing, the event loop).
2. `--clients` concurrent clients each sending `--per-client` requests (one prompt each, its own seed,
   `--new-tokens` tokens; Dart writes one token per tag): one after another (at most `--clients`
   sequences in flight), all at once on their own connections, and in one body (`requests`); results/s
   over the wall time of each.
3. `dtg batch` on the same prompts and seeds (a JSONL file): results/s from its own summary line (model
   loading excluded) and over its whole process, at its default --parallel and at `--clients` sequences; and the same prompts as `dtg generate` processes, one
   after another: results/s over their wall time. The server's records are checked to equal the batch's.
4. The server's peak resident memory (VmHWM) with both models loaded, after all of the above.
5. One request alone, decoded in this process: on `dtg generate`'s one-result path, and on the batch path
   (`--parallel` 2 and 128) that the server takes.

Random weights: this measures speed and memory, not the quality of the tags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.batch_bench import prompts_file
from benchmarks.generate_bench import dtg_command, full_size_model, run_and_measure
from dtg_cli.client import Client
from tests.checkpoints import DART_MOE, TIPO_200M
from tests.servers import Served

PLACE = ("id", "record", "line", "variant")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoints and GGUFs go (default: a temporary directory)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--single-runs", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    _, dart = full_size_model(workdir, "dart-moe", DART_MOE)
    _, tipo = full_size_model(workdir, "tipo-200m", TIPO_200M)
    n = args.clients * args.per_client
    prompts = prompts_file(workdir / "serve-prompts.txt", n, seed=2).read_text(encoding="utf-8").splitlines()
    seeds = list(range(1000, 1000 + n))
    new = args.new_tokens
    threads = str(args.threads)
    print(
        f"full-size random-weight Dart v2 MoE Q8_0 (and TIPO-200M-shaped Q8_0 loaded beside it), {args.threads} threads, {new} new tokens"
    )

    # 1 and 2: the server.
    with Served([dart, tipo], "--threads", threads) as server:
        client = Client(server.url, timeout=600)
        loaded_rss = peak_rss_mb(server.process.pid)
        name = dart.stem
        client.generate(prompts[0], model=name, seed=1, max_new_tokens=new)  # warm-up
        last_tag, last_result, decode = [], [], []
        for i in range(args.single_runs):
            start = time.perf_counter()
            tag_at = None
            for event in client.stream(prompts[i % n], model=name, seed=seeds[i], max_new_tokens=new):
                if event.kind == "tag":
                    tag_at = time.perf_counter()
                elif event.kind == "result":
                    last_result.append(time.perf_counter() - start)
                    t = event.data["timings"]
                    decode.append(t["prompt_s"] + t["generate_s"])
            last_tag.append((tag_at or time.perf_counter()) - start)
        tag_ms, result_ms, decode_ms = (statistics.median(x) * 1000 for x in (last_tag, last_result, decode))
        print(
            f"warm single request, median of {args.single_runs}: last tag {tag_ms:.1f} ms, result {result_ms:.1f} ms, decode {decode_ms:.1f} ms"
        )
        print(f"  overhead to the last tag: {tag_ms - decode_ms:.1f} ms; to the result record: {result_ms - decode_ms:.1f} ms")

        # Each client's requests: one after another, all at once on their own connections, or in one body.
        def sequential(c: int) -> list[tuple[int, dict]]:
            mine = range(c * args.per_client, (c + 1) * args.per_client)
            return [(i, client.generate(prompts[i], model=name, seed=seeds[i], max_new_tokens=new)[0]) for i in mine]

        def at_once(c: int) -> list[tuple[int, dict]]:
            mine = range(c * args.per_client, (c + 1) * args.per_client)
            with ThreadPoolExecutor(args.per_client) as own:
                return list(own.map(lambda i: (i, client.generate(prompts[i], model=name, seed=seeds[i], max_new_tokens=new)[0]), mine))

        def one_body(c: int) -> list[tuple[int, dict]]:
            mine = list(range(c * args.per_client, (c + 1) * args.per_client))
            answer = client.generate_many([{"tags": prompts[i], "seed": seeds[i]} for i in mine], model=name, max_new_tokens=new)
            return [(i, records[0]) for i, records in zip(mine, answer, strict=True)]

        timed = {}
        for label, how in (("one after another", sequential), ("all at once", at_once), ("in one body", one_body)):
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                answered = [pair for part in pool.map(how, range(args.clients)) for pair in part]
            timed[label] = time.perf_counter() - start
            served = {i: json.dumps(record) for i, record in answered}
            print(f"{args.clients} clients x {args.per_client} requests {label}: {n / timed[label]:.2f} results/s ({timed[label]:.2f} s)")
        peak = peak_rss_mb(server.process.pid)

    # 3: dtg batch and dtg generate on the same prompts and seeds.
    dtg = dtg_command()
    source = workdir / "serve-prompts.jsonl"
    source.write_text("".join(json.dumps({"tags": p, "seed": s}) + "\n" for p, s in zip(prompts, seeds, strict=True)), encoding="utf-8")
    out = workdir / "serve-batch.jsonl"
    command = [
        *dtg,
        "batch",
        str(source),
        "-o",
        str(out),
        "--force",
        "-m",
        str(dart),
        "--max-new-tokens",
        str(new),
        "--threads",
        threads,
        "-v",
    ]
    wall, rss, _, stderr = run_and_measure(command, want_stderr=True)
    summary = re.search(r"(\d+) records, (\d+) results, (\d+) new tags in ([\d.]+) s", stderr)
    batch_s = float(summary[4])
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    batched = {line["line"] - 1: json.dumps({k: v for k, v in line.items() if k not in PLACE}) for line in lines}
    same = sum(served[i] == batched[i] for i in range(n))
    print(
        f"dtg batch: {n / batch_s:.2f} results/s ({batch_s:.2f} s, model loading excluded), {n / wall:.2f} over the whole process ({wall:.2f} s)"
    )
    # The same sequences in flight as clients that send one request at a time.
    narrow = run_and_measure([*command, "--parallel", str(args.clients)], want_stderr=True)[3]
    narrow_s = float(re.search(r"new tags in ([\d.]+) s", narrow)[1])
    print(f"dtg batch --parallel {args.clients}: {n / narrow_s:.2f} results/s ({narrow_s:.2f} s, model loading excluded)")
    start = time.perf_counter()
    for p, s in zip(prompts, seeds, strict=True):
        done = subprocess.run(
            [*dtg, "generate", "-m", str(dart), p, "--seed", str(s), "--max-new-tokens", str(new), "--threads", threads],
            capture_output=True,
        )
        if done.returncode:
            sys.exit(done.stderr.decode())
    generate_s = time.perf_counter() - start
    print(f"dtg generate, {n} processes one after another: {n / generate_s:.2f} results/s ({generate_s:.1f} s)")
    for label, served_s in timed.items():
        print(
            f"server, requests {label}: {batch_s / served_s:.2f}x dtg batch (loading excluded), {wall / served_s:.2f}x its whole process, "
            f"{generate_s / served_s:.1f}x the dtg generate processes"
        )
    print(f"server, requests one after another: {narrow_s / timed['one after another']:.2f}x dtg batch --parallel {args.clients}")
    print(f"{same} of {n} server records (the last run's) identical to dtg batch's")
    print(f"server peak RSS: {loaded_rss:.0f} MB with both models loaded, {peak:.0f} MB after the runs above (VmHWM)")
    decode_paths(dart, prompts[0], seeds[0], new, args.threads)


def decode_paths(gguf: Path, tags: str, seed: int, new: int, threads: int, runs: int = 5) -> None:
    """One request alone, in this process: on the one-result path of `dtg generate` and on the batch path
    the server takes (median of `runs` after a warm-up)."""
    from dtg_cli.engine import Generator
    from dtg_cli.outcomes import Task
    from dtg_cli.settings import Request

    request = Request.from_options(tags, sampling={"seed": seed, "max_new_tokens": new})
    with Generator(gguf, threads=threads) as generator:
        for label, options in (
            ("one-result path (dtg generate, 1 result)", {"most": 1}),
            ("--parallel 2", {"parallel": 2}),
            ("--parallel 128", {"parallel": 128}),
        ):
            times = []
            for _ in range(runs + 1):
                start = time.perf_counter()
                list(generator.run([Task(request)], **options))
                times.append(time.perf_counter() - start)
            print(f"one request alone, in-process, {label}: {statistics.median(times[1:]) * 1000:.0f} ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
