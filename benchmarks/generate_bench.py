"""Time whole `dtg generate` processes against transformers on a full-size random-weight Dart v2 MoE.

    python -m benchmarks.generate_bench [--workdir DIR] [--runs 5] [--new-tokens 40] [--threads N]

Builds the checkpoint (real dimensions, bf16, random weights) and its Q8_0 GGUF once, then runs, for
each seed, one `dtg generate` process and one Python process that loads the same checkpoint in
transformers and samples as many new tokens with the same settings. For both it reports the median
wall time of the whole process (start to exit), the median generation rate (new tokens per second of
decoding, from inside the process) and the peak resident memory of the process (rusage maxrss).

The table's `dtg generate` runs add `--format json -v` to read the new tags and the generation rate,
which costs time of its own (the log lines go through rich). Start-up: the median wall time of
`dtg --version` and `dtg --help` processes, of a `dtg generate` process that makes one new token, which is the time
from the process's start to its first token (plus its exit), and of the same process making all the new
tokens, as a user runs it (text to a pipe). Random weights: this measures speed, not the quality of the
tags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.checkpoints import DART_MOE, build_checkpoint

TAGS = "1girl, cat ears, solo, looking at viewer"

TRANSFORMERS = """
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
checkpoint, ids, new, seed, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32)
torch.manual_seed(seed)
start = time.perf_counter()
with torch.no_grad():
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=True,
                         temperature=1.0, top_k=100, top_p=1.0, max_new_tokens=new, eos_token_id=[1, 7], pad_token_id=2)
elapsed = time.perf_counter() - start
n = out.shape[1] - len(ids)
print(json.dumps({"new_tokens": n, "tokens_per_s": n / elapsed}))
"""


def run_and_measure(command: list[str], want_stderr: bool = False, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple:
    """(wall seconds, peak RSS in MB, stdout[, stderr]) of one process from its start to its exit; the child
    is reaped with wait4 to read its own maxrss. `env`: variables set for the child; `cwd`: where it runs."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd)
    chunks_out, chunks_err = [], []
    # Read both pipes to the end, then reap the child ourselves to get its resource usage.
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, chunks_out)
    selector.register(process.stderr, selectors.EVENT_READ, chunks_err)
    open_pipes = 2
    while open_pipes:
        for key, _ in selector.select():
            data = os.read(key.fileobj.fileno(), 65536)
            if data:
                key.data.append(data)
            else:
                selector.unregister(key.fileobj)
                open_pipes -= 1
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{b''.join(chunks_err).decode()[-2000:]}")
    if want_stderr:
        return wall, usage.ru_maxrss / 1024, b"".join(chunks_out).decode(), b"".join(chunks_err).decode(errors="replace")
    return wall, usage.ru_maxrss / 1024, b"".join(chunks_out).decode()


def full_size_model(workdir: Path, name: str, spec) -> tuple[Path, Path]:
    """A full-size random-weight checkpoint of `spec` in `workdir`/`name` and its Q8_0 GGUF, built once."""
    checkpoint = workdir / name
    if not (checkpoint / "config.json").is_file():
        print(f"building a full-size random-weight {name} checkpoint in {checkpoint}", file=sys.stderr)
        build_checkpoint(checkpoint, spec)
    gguf = workdir / f"{name}-Q8_0.gguf"
    if not gguf.is_file():
        from dtg_cli.convert import convert

        print(f"converting {name} to Q8_0", file=sys.stderr)
        convert(checkpoint, workdir, ["q8_0"], name=name)
    return checkpoint, gguf


def dtg_command() -> list[str]:
    """The installed `dtg` beside this Python, else `python -m dtg_cli`."""
    dtg = shutil.which("dtg", path=str(Path(sys.executable).parent)) or shutil.which("dtg")
    return [dtg] if dtg else [sys.executable, "-m", "dtg_cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoint and GGUF go (default: a temporary directory)")
    parser.add_argument("--runs", type=int, default=5, help="processes per tool (seeds 1..runs)")
    parser.add_argument("--new-tokens", type=int, default=40, help="new tags to generate (one token per tag)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    checkpoint, gguf = full_size_model(workdir, "dart-moe", DART_MOE)
    dtg = dtg_command()

    rows = {"dtg": [], "transformers": []}
    input_ids = None
    for seed in range(1, args.runs + 1):
        wall, rss, out, err = run_and_measure(
            [
                *dtg,
                "generate",
                TAGS,
                "--model",
                str(gguf),
                "--seed",
                str(seed),
                "--max-new-tokens",
                str(args.new_tokens),
                "--threads",
                str(args.threads),
                "--format",
                "json",
                "-v",
            ],  # fmt: skip
            want_stderr=True,
        )
        (record,) = json.loads(out)
        input_ids = record["input_ids"]
        rate = re.search(r"tokens in [0-9.]+ s \(([0-9.]+) tokens/s\)", err)  # the -v line of each result
        rows["dtg"].append((wall, float(rate[1]), len(record["new_tags"]), rss))
        wall, rss, out = run_and_measure(
            [sys.executable, "-c", TRANSFORMERS, str(checkpoint), json.dumps(input_ids), str(args.new_tokens), str(seed), str(args.threads)]
        )
        result = json.loads(out.strip().splitlines()[-1])
        rows["transformers"].append((wall, result["tokens_per_s"], result["new_tokens"], rss))

    print(f"Dart v2 MoE (full size, random weights), {args.new_tokens} new tokens, {args.runs} processes each, {args.threads} threads")
    print(f"{'tool':<19} {'median wall s':>14} {'median tokens/s':>16} {'new tags':>9} {'peak RSS MB':>12}")
    medians = {}
    for tool, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        tags = statistics.median(r[2] for r in runs)
        rss = max(r[3] for r in runs)
        medians[tool] = (wall, rate)
        label = f"{tool} ({'Q8_0' if tool == 'dtg' else 'fp32'})"
        print(f"{label:<19} {wall:14.2f} {rate:16.1f} {tags:9.0f} {rss:12.0f}")
    print(
        f"dtg is {medians['transformers'][0] / medians['dtg'][0]:.1f}x faster per process and "
        f"{medians['dtg'][1] / medians['transformers'][1]:.1f}x faster per generated token"
    )

    generate = [*dtg, "generate", TAGS, "--model", str(gguf), "--threads", str(args.threads), "--max-new-tokens"]
    startup = {
        "dtg --version": ([*dtg, "--version"], dict),
        "dtg --help": ([*dtg, "--help"], dict),
        "dtg generate, 1 new token (to the first token)": ([*generate, "1"], dict),
        f"dtg generate, {args.new_tokens} new tags (the whole process)": ([*generate, str(args.new_tokens)], dict),
    }
    print(f"start-up, median wall s of {args.runs} processes each:")
    for label, (command, env) in startup.items():
        walls = [
            run_and_measure([*command, *(["--seed", str(seed)] if "generate" in command else [])], env=env())[0]
            for seed in range(1, args.runs + 1)
        ]
        print(f"  {label:<48} {statistics.median(walls):6.3f}")


if __name__ == "__main__":
    main()
