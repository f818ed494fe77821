"""Time TIPO on a full-size random-weight TIPO-200M (768 hidden, 20 layers, 12 heads, 2304 intermediate), Q8_0:
one whole `dtg generate` process, and `dtg batch` beside transformers `generate` over padded batches of the
same prompts, in the same run.

    python -m benchmarks.tipo_bench [--workdir DIR] [--records 64] [--new-tokens 32] [--hf-batch 16] [--threads N]
                                    [--parallel 8,16,32,64]

`dtg generate`: the median wall time of --runs processes that extend tags (`--max-new-tokens`
--new-tokens) and of processes that make one new token (the time to the first token, plus the exit).
`dtg batch`: --records prompts (random popular Danbooru tags), tag extension with --retries 0; records/s
and new tokens/s from its JSONL output and its summary line (model loading excluded). transformers: the
same prompt ids, left-padded into batches of --hf-batch, `generate` with the same sampling settings and
`min_new_tokens` = `max_new_tokens` = the mean number of tokens dtg generated per record, so both make the
same number of tokens. `--parallel`: `dtg batch` again on the same prompts at each of these --parallel,
records/s of each beside the default's. Random weights: this measures speed, not the quality of the tags.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.generate_bench import dtg_command, full_size_model, run_and_measure
from tests.checkpoints import TIPO_200M, danbooru_tags

TRANSFORMERS_BATCHES = """
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
checkpoint, prompts, new, threads, batch = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
torch.manual_seed(0)
start = time.perf_counter()
tokens = 0
with torch.no_grad():
    for i in range(0, len(prompts), batch):
        group = prompts[i : i + batch]
        width = max(len(p) for p in group)
        ids = torch.tensor([[2] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=0.35, top_p=0.95, top_k=60, min_p=0.1,
                             repetition_penalty=1.17, max_new_tokens=new, min_new_tokens=new, eos_token_id=[2], pad_token_id=2)
        tokens += (out.shape[1] - width) * len(group)
elapsed = time.perf_counter() - start
print(json.dumps({"records": len(prompts), "seconds": elapsed, "tokens": tokens}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dtg-bench")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", default="", help="comma-separated --parallel values to run dtg batch at too")
    args = parser.parse_args()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, gguf = full_size_model(workdir, "tipo-200m", TIPO_200M)
    dtg = dtg_command()
    threads = ["--threads", str(args.threads)]

    tags = "1girl, cat ears, solo, looking at viewer"
    whole, first = [], []
    for seed in range(1, args.runs + 1):
        common = [*dtg, "generate", tags, "-m", str(gguf), "--seed", str(seed), "--retries", "0", *threads]
        whole.append(run_and_measure([*common, "--max-new-tokens", str(args.new_tokens)])[0])
        first.append(run_and_measure([*common, "--max-new-tokens", "1"])[0])
    print(f"TIPO-200M (full size, random weights) Q8_0, {args.threads} threads, median of {args.runs} processes")
    print(f"  dtg generate, tag extension, up to {args.new_tokens} new tokens  {statistics.median(whole):6.3f} s")
    print(f"  dtg generate, 1 new token (to the first token)          {statistics.median(first):6.3f} s")

    rng = random.Random(0)
    popular = [name for name, category, _ in danbooru_tags()[:3000] if category == 0]
    prompts = workdir / "tipo-prompts.txt"
    prompts.write_text("".join(", ".join(rng.sample(popular, rng.randint(3, 8))) + "\n" for _ in range(args.records)), encoding="utf-8")
    out = workdir / "tipo-out.jsonl"

    def batch(*extra: str) -> tuple[float, float, float]:
        """(seconds of generation, whole-process wall seconds, peak RSS MB) of one `dtg batch` run."""
        wall, rss, _, err = run_and_measure(
            [*dtg, "batch", str(prompts), "-m", str(gguf), "-o", str(out), "--force", "--retries", "0",
             "--max-new-tokens", str(args.new_tokens), *threads, *extra],
            want_stderr=True,
        )  # fmt: skip
        summary = re.search(r"(\d+) records, .* in ([0-9.]+) s", err)
        if not summary:
            raise SystemExit(f"no summary line from dtg batch:\n{err}")
        return float(summary[2]), wall, rss

    seconds, wall, rss = batch()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    tokens = sum(len(step["output_ids"]) for r in records for step in r["steps"])
    print(f"dtg batch, {len(records)} records, tag extension, up to {args.new_tokens} new tokens each:")
    print(f"  dtg batch (default --parallel)  {len(records) / seconds:8.2f} records/s {tokens / seconds:8.1f} tokens/s  "
          f"({seconds:.2f} s of generation, {wall:.2f} s whole process, peak RSS {rss:.0f} MB)")  # fmt: skip

    new = max(1, round(tokens / len(records)))
    ids = [r["input_ids"] for r in records]
    _, hf_rss, hf_out = run_and_measure(
        [sys.executable, "-c", TRANSFORMERS_BATCHES, str(checkpoint), json.dumps(ids), str(new), str(args.threads), str(args.hf_batch)]
    )
    hf = json.loads(hf_out.strip().splitlines()[-1])
    print(f"  transformers fp32, batches of {args.hf_batch}, {new} new tokens each  {hf['records'] / hf['seconds']:8.2f} records/s "
          f"{hf['tokens'] / hf['seconds']:8.1f} tokens/s  ({hf['seconds']:.2f} s of generation, peak RSS {hf_rss:.0f} MB)")  # fmt: skip
    print(f"dtg batch makes {(tokens / seconds) / (hf['tokens'] / hf['seconds']):.1f}x the tokens per second of transformers")
    for parallel in [int(p) for p in args.parallel.split(",") if p.strip()]:
        p_seconds, _, p_rss = batch("--parallel", str(parallel))
        print(f"  dtg batch --parallel {parallel:<4} {len(records) / p_seconds:8.2f} records/s  (peak RSS {p_rss:.0f} MB)")


if __name__ == "__main__":
    main()
