"""What the tag database costs: the time it adds to a `dtg generate` process, and the `dtg tags` commands.

    python -m benchmarks.tags_bench [--runs 10]

A `dtg generate` process reads its prompt once, before the model runs: the database is opened on the
first lookup (one read of the file, no parsing), then every tag is looked up. This script starts
fresh Python processes that import what generate has already imported by then (the engine, numpy) and
time, inside the process, the first `read` of a pasted web-UI prompt of 9 tags: that is the time the
database adds. It also times a suggestion search for one unknown tag (paid only when a tag is unknown)
and whole `dtg tags search` / `dtg tags check` processes. Medians over --runs processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PROMPT = "hatsune_miku, (masterpiece:1.2), vocaloid, 1girl, /lh, cat ears, <lora:style:0.8>, BREAK, looking at viewer, (smile:1.1), ganyu \\(genshin impact\\)"

_PROBE = """
import json, time
import dtg_cli.engine  # imported by generate before it reads the prompt (numpy with it)
from dtg_cli.families import formats

FORMATS = formats()
from dtg_cli.settings import Request
from dtg_cli.reading import read
from dtg_cli.tagdb import database
request = Request.from_options({prompt!r})
t0 = time.perf_counter()
reading = read(request, FORMATS["dart-v2-sft"].accepts)
t1 = time.perf_counter()
database().suggest("cat earz")
t2 = time.perf_counter()
print(json.dumps({{"read_ms": (t1 - t0) * 1000, "suggest_ms": (t2 - t1) * 1000, "tags": len(reading.layout.tags())}}))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(prompt=PROMPT)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def process_s(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dtg_cli", *args], capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    probes = [probe() for _ in range(args.runs)]
    read_ms = statistics.median(p["read_ms"] for p in probes)
    suggest_ms = statistics.median(p["suggest_ms"] for p in probes)
    search = statistics.median(process_s(["tags", "search", "*hair*"]) for _ in range(args.runs))
    check = statistics.median(process_s(["tags", "check", PROMPT, "--format", "json"]) for _ in range(args.runs))
    version = statistics.median(process_s(["--version"]) for _ in range(args.runs))
    print(f"{args.runs} fresh processes each, medians")
    print(f"first read of a {probes[0]['tags']}-tag web-UI prompt (database opened + lookups): {read_ms:6.1f} ms  (target <= 50 ms)")
    print(f"suggestions for one unknown tag ('cat earz'):                      {suggest_ms:6.1f} ms")
    print(f"dtg --version process:                                             {version * 1000:6.0f} ms")
    print(f"dtg tags search '*hair*' process:                                  {search * 1000:6.0f} ms")
    print(f"dtg tags check (9 tags, json) process:                             {check * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
