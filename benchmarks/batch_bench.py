"""Time `dtg batch` with --parallel 1 and with the default against a transformers loop, and show its memory
as the input grows, on full-size random-weight Dart v2 MoE and DanTagGen checkpoints (Q8_0).

    python -m benchmarks.batch_bench [--workdir DIR] [--records 256] [--loop-records 8] [--same-records 16]
                                     [--memory-records 256,4096] [--models dart-moe,dantaggen] [--threads N]

For each model it expands the same prompts (random popular Danbooru tags, 3 to 8 each) in one
`dtg batch` process with --parallel 1 and one with the default, and reports records/s and new tags/s
(from the run's own summary line, model loading excluded), the whole process's wall time and its peak
resident memory (rusage maxrss). It checks that the default run's first --same-records results equal a
`--parallel 2` run's on those prompts (what docs/determinism.md states). A Python process then
loads the same checkpoint in transformers once and generates, one prompt at a time, as many new tokens
per record as dtg's budget, for the first --loop-records prompts. Last, the default run of Dart is
repeated on inputs of growing size (fewer new tokens, to keep it short) to show that memory stays flat.
Random weights: this measures speed and memory, not the quality of the tags; they write few of the
commas that end a DanTagGen tag, so its tags/s is low.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
from pathlib import Path

from benchmarks.generate_bench import dtg_command, full_size_model, run_and_measure
from tests.checkpoints import DANTAGGEN, DART_MOE, danbooru_tags

MODELS = {
    # name: (spec, prompt format, new tokens per record, stop token ids for transformers)
    "dart-moe": (DART_MOE, "dart-v2-sft", 40, [1, 7]),
    "dantaggen": (DANTAGGEN, "dantaggen-delta", 32, [2]),
}

TRANSFORMERS_LOOP = """
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
checkpoint, prompts, new, threads, stop = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
torch.manual_seed(0)
start = time.perf_counter()
tokens = 0
with torch.no_grad():
    for ids in prompts:
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=True,
                             temperature=1.0, top_k=100, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                             eos_token_id=stop, pad_token_id=0)
        tokens += out.shape[1] - len(ids)
elapsed = time.perf_counter() - start
print(json.dumps({"records": len(prompts), "seconds": elapsed, "tokens": tokens}))
"""


def prompts_file(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    popular = [name for name, category, _ in danbooru_tags()[:3000] if category == 0]
    path.write_text("".join(", ".join(rng.sample(popular, rng.randint(3, 8))) + "\n" for _ in range(n)), encoding="utf-8")
    return path


def ensure_model(workdir: Path, name: str) -> tuple[Path, Path]:
    return full_size_model(workdir, name, MODELS[name][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoints and GGUFs go (default: a temporary directory)")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--loop-records", type=int, default=8, help="prompts for the transformers loop")
    parser.add_argument("--same-records", type=int, default=16, help="prompts for the --parallel 2 comparison")
    parser.add_argument("--memory-records", default="256,4096", help="input sizes for the memory check")
    parser.add_argument("--models", default="dart-moe,dantaggen")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    dtg = dtg_command()
    src = prompts_file(workdir / "prompts.txt", args.records)

    print(f"{args.records} prompts, {args.threads} threads, Q8_0, random weights")
    print(f"{'model':<10} {'run':<22} {'records/s':>10} {'tags/s':>8} {'wall s':>8} {'peak RSS MB':>12}")
    for name in args.models.split(","):
        spec, prompt_format, new, stop = MODELS[name]
        checkpoint, gguf = ensure_model(workdir, name)
        runs = {}
        for label, parallel in (("--parallel 1", 1), ("default --parallel", None)):
            out = workdir / f"{name}-{'p1' if parallel else 'default'}.jsonl"
            runs[label] = measure(dtg, gguf, prompt_format, src, out, new, args.threads, parallel)
            r = runs[label]
            shown = f"{label} ({r['parallel']})" if parallel is None else label
            print(f"{name:<10} {shown:<22} {r['records_s']:10.2f} {r['tags_s']:8.0f} {r['wall']:8.1f} {r['rss']:12.0f}", flush=True)
        loop = transformers_loop(checkpoint, gguf, prompt_format, src, args.loop_records, new, args.threads, stop)
        print(f"{name:<10} {'transformers loop':<22} {loop:10.2f} {'':>8} {'':>8} {'':>12}", flush=True)
        p1, default = runs["--parallel 1"], runs["default --parallel"]
        head = workdir / "prompts-head.txt"
        head.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[: args.same_records]), encoding="utf-8")
        measure(dtg, gguf, prompt_format, head, workdir / f"{name}-p2.jsonl", new, args.threads, 2)
        two = (workdir / f"{name}-p2.jsonl").read_text(encoding="utf-8").splitlines()
        same = two == (workdir / f"{name}-default.jsonl").read_text(encoding="utf-8").splitlines()[: len(two)]
        print(
            f"{name}: default is {default['records_s'] / p1['records_s']:.2f}x --parallel 1 and "
            f"{default['records_s'] / loop:.1f}x the transformers loop; "
            f"first {len(two)} results identical to --parallel 2: {'yes' if same else 'NO'}",
            flush=True,
        )

    sizes = [int(n) for n in args.memory_records.split(",")]
    spec, prompt_format, _, _ = MODELS["dart-moe"]
    _, gguf = ensure_model(workdir, "dart-moe")
    print("memory as the input grows (dart-moe, default --parallel, 8 new tokens per record):")
    for n in sizes:
        big = prompts_file(workdir / f"prompts-{n}.txt", n, seed=1)
        r = measure(dtg, gguf, prompt_format, big, workdir / f"memory-{n}.jsonl", 8, args.threads, None)
        print(f"  {n:>6} records: peak RSS {r['rss']:.0f} MB, {r['records_s']:.1f} records/s", flush=True)


def measure(dtg, gguf, prompt_format, src, out, new, threads, parallel) -> dict:
    command = [*dtg, "batch", str(src), "-o", str(out), "--force", "-m", str(gguf), "--prompt-format", prompt_format,
               "--max-new-tokens", str(new), "--threads", str(threads), "--seed", "1", "-v"]  # fmt: skip
    if parallel is not None:
        command += ["--parallel", str(parallel)]
    wall, rss, _, stderr = run_and_measure(command, want_stderr=True)
    summary = re.search(r"(\d+) records, (\d+) results, (\d+) new tags in ([\d.]+) s", stderr)
    if not summary:
        raise SystemExit(f"no summary line from {' '.join(command)}:\n{stderr[-2000:]}")
    records, _, tags, seconds = int(summary[1]), int(summary[2]), int(summary[3]), float(summary[4])
    chosen = re.search(r"(\d+) sequences per decode", stderr)
    return {"records_s": records / seconds, "tags_s": tags / seconds, "wall": wall, "rss": rss, "parallel": chosen[1] if chosen else "?"}


def transformers_loop(
    checkpoint: Path, gguf: Path, prompt_format: str, src: Path, n: int, new: int, threads: int, stop: list[int]
) -> float:
    """Records per second of a loop over the first `n` prompts, with the model loaded once."""
    from dtg_cli.engine import Generator
    from dtg_cli.settings import Request

    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    with Generator(gguf, prompt_format=prompt_format, n_gpu_layers=0) as generator:
        ids = [
            generator.tokenizer.encode(generator.format.build(Request.from_options(line), [t.strip() for t in line.split(",")]))
            for line in lines
        ]
    _, _, out = run_and_measure(
        [sys.executable, "-c", TRANSFORMERS_LOOP, str(checkpoint), json.dumps(ids), str(new), str(threads), json.dumps(stop)]
    )
    result = json.loads(out.strip().splitlines()[-1])
    return result["records"] / result["seconds"]


if __name__ == "__main__":
    main()
