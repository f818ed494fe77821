"""Measure how fast llama.cpp decodes on this machine, and the most records/s `dtg batch` could reach.

    python -m benchmarks.decode_bench [--workdir DIR] [--models dart-moe,dantaggen] [--sequences 8,32,64]
                                      [--steps 8] [--records 256] [--threads N]

On the full-size random-weight Q8_0 models of `benchmarks.batch_bench` (built there if missing), it times
decodes of the shape `dtg batch` uses: one token for each of N sequences (the --sequences below dtg's
default, and the default), every row asking for logits (a generation step) or none (prompt tokens
beside them), with each sequence's cache as full as a benchmark record's halfway through its new tokens
and as many cells as dtg gives it. From the best rates, the benchmark's own prompts (their tokens after
the shared head, from dtg's tokenizer) and its new tokens per record, it prints the ceiling: the
records/s of a run that did nothing but those decodes at those rates.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.batch_bench import MODELS, ensure_model, prompts_file


def rates(model, n_seq: int, n_ctx_seq: int, fill: int, steps: int, threads: int, rng) -> tuple[float, float]:
    """Tokens per second of decodes of one token for each of sequences 0..n_seq-1, with every row asking
    for logits and with none, alternately, after `fill` tokens already in each sequence's cache."""
    from dtg_cli import llama

    with llama.Context(model, n_ctx=n_ctx_seq * n_seq, n_batch=max(512, n_seq), n_seq_max=n_seq, n_threads=threads) as context:
        tokens = rng.integers(10, 30000, fill).tolist()
        for start in range(0, fill, 512):
            context.decode_many([(0, tokens[start : start + 512], start, False)])
        for seq in range(1, n_seq):
            context.copy(0, seq)
        spent = {True: 0.0, False: 0.0}
        for step in range(2 * steps + 1):
            logits = step % 2 == 0
            begin = time.perf_counter()
            context.decode_many([(seq, [int(rng.integers(10, 30000))], fill + step, logits) for seq in range(n_seq)])
            if step:  # the first one copies the caches and warms up
                spent[logits] += time.perf_counter() - begin
    return n_seq * steps / spent[True], n_seq * steps / spent[False]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoints and GGUFs are or go (default: a temporary directory)")
    parser.add_argument("--models", default="dart-moe,dantaggen")
    parser.add_argument("--sequences", default="8,32,64", help="sequences per decode to try, besides dtg's default")
    parser.add_argument("--steps", type=int, default=8, help="decodes of each kind per measurement")
    parser.add_argument("--records", type=int, default=256, help="prompts whose lengths the ceiling uses")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from dtg_cli import llama
    from dtg_cli.engine import Generator, Task
    from dtg_cli.scheduler import context_per_sequence, default_parallel
    from dtg_cli.settings import Request

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    lines = prompts_file(workdir / "prompts.txt", args.records).read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(0)
    print(f"{args.threads} threads, Q8_0, random weights; tokens/s of one decode of one token per sequence")
    for name in args.models.split(","):
        _, prompt_format, new, _ = MODELS[name]
        _, gguf = ensure_model(workdir, name)
        with Generator(gguf, prompt_format=prompt_format, n_gpu_layers=0) as generator:
            generator.unknown.warn = False
            prepared = [generator.prepare(Task(Request.from_options(line))) for line in lines]
            n_ctx_seq = context_per_sequence(generator.model, max(len(p.input_ids) for p in prepared), new)
            default = default_parallel(generator.model, n_ctx_seq)
        suffix = float(np.mean([len(p.input_ids) - len(p.head) for p in prepared]))
        fill = round(np.mean([len(p.input_ids) for p in prepared]) + new / 2 - args.steps)
        best = {True: 0.0, False: 0.0}
        with llama.Model(gguf, n_gpu_layers=0) as model:
            for n_seq in sorted({int(n) for n in args.sequences.split(",") if int(n) < default} | {default}):
                sampled, prompt = rates(model, n_seq, n_ctx_seq, fill, args.steps, args.threads, rng)
                best[True], best[False] = max(best[True], sampled), max(best[False], prompt)
                print(f"{name:<10} {n_seq:>4} sequences: {sampled:7.1f} tokens/s with logits, {prompt:7.1f} without", flush=True)
        # A record: its prompt after the head, all but the last token without logits, then `new` with logits.
        seconds = (suffix - 1) / best[False] + new / best[True]
        print(f"{name}: {suffix:.1f} prompt tokens after the head and {new} new tokens per record; "
              f"ceiling at the best rates: {1 / seconds:.2f} records/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
