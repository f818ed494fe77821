"""Time `dtg batch --ray` with 1 and 2 workers against a local `dtg batch`, on one machine, full-size
random-weight Dart v2 MoE Q8_0:

    python -m benchmarks.ray_bench [--workdir DIR] [--records 512] [--new-tokens 40] [--threads 2]

The same prompts (random popular tags, 3 to 8 each) run locally with `--threads`, then on a local Ray
cluster that the benchmark starts (`ray start --head`, all of the machine's CPUs), with `--workers 1`
(one actor of `--threads` CPUs) and `--workers 2` (two of half as many each). It reports each run's
records/s from its own summary line and over its whole process (Ray's start-up and the actors' model
loading included), the Ray path's overhead against the local run, and whether each output is identical
to the local one. Random weights: this measures speed, not the quality of the tags.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.batch_bench import prompts_file
from benchmarks.generate_bench import dtg_command, full_size_model, run_and_measure
from tests.checkpoints import DART_MOE


def measure(command: list[str]) -> tuple[float, float]:
    """(records/s from the run's summary line, records/s over its whole process)."""
    # `ray start` turns on Ray's token authentication; a driver then reads the token (~/.ray/auth_token) in this mode.
    wall, _, _, stderr = run_and_measure(command, want_stderr=True, env={"RAY_AUTH_MODE": "token"})
    summary = re.search(r"(\d+) records, (\d+) results, (\d+) new tags in ([\d.]+) s", stderr)
    if not summary:
        raise SystemExit(f"no summary line from {' '.join(command)}:\n{stderr[-2000:]}")
    return int(summary[1]) / float(summary[4]), int(summary[1]) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoint and GGUF go (default: a temporary directory)")
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    _, gguf = full_size_model(workdir, "dart-moe", DART_MOE)
    source = prompts_file(workdir / "ray-prompts.txt", args.records, seed=3)
    dtg = dtg_command()
    common = [*dtg, "batch", str(source), "--force", "-m", str(gguf), "--max-new-tokens", str(args.new_tokens), "-v"]
    print(f"full-size random-weight Dart v2 MoE Q8_0, {args.records} records, {args.new_tokens} new tokens, {args.threads} CPUs")
    local_out = workdir / "ray-local.jsonl"
    local, local_whole = measure([*common, "-o", str(local_out), "--threads", str(args.threads)])
    print(f"local dtg batch --threads {args.threads}: {local:.2f} records/s ({local_whole:.2f} over the whole process)")
    port = 6390
    subprocess.run(
        ["ray", "start", "--head", f"--port={port}", f"--num-cpus={args.threads}", "--include-dashboard=false"],
        check=True,
        capture_output=True,
    )
    try:
        for workers in (1, 2):
            cpus = max(1, args.threads // workers)
            out = workdir / f"ray-{workers}.jsonl"
            rate, whole = measure([*common, "-o", str(out), "--ray", "--ray-address", f"127.0.0.1:{port}", "--workers", str(workers),
                                   "--cpus-per-worker", str(cpus)])  # fmt: skip
            same = out.read_bytes() == local_out.read_bytes()
            print(
                f"--ray --workers {workers} ({cpus} CPUs each): {rate:.2f} records/s ({whole:.2f} over the whole process); "
                f"overhead {100 * (local / rate - 1):+.0f}% ({100 * (local_whole / whole - 1):+.0f}% whole); identical output: {'yes' if same else 'NO'}",
                flush=True,
            )
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
