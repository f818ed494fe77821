"""Convert full-size random-weight checkpoints and report wall time and peak RSS for each step.

    python -m benchmarks.convert_bench [--workdir DIR] [--models dart-moe,dantaggen]

Each step runs in its own process and reports its own peak resident memory (VmHWM of /proc/self/status:
unlike rusage's maxrss, it does not count the parent's memory that a fork briefly shares).
The checkpoints have the real dimensions (REFERENCE.md) and random weights.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.checkpoints import DANTAGGEN, DART_DENSE, DART_MOE, build_checkpoint

MODELS = {"dart-moe": DART_MOE, "dart-dense": DART_DENSE, "dantaggen": DANTAGGEN}

STEP_F16 = "from dtg_cli.convert.hf_to_gguf import SourceInfo, write_gguf_f16; import sys; write_gguf_f16(sys.argv[1], sys.argv[2], SourceInfo('bench'))"
STEP_QUANT = "from dtg_cli.convert.quantize import quantize; import sys; from pathlib import Path; quantize(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])"


PEAK = "\nimport re; print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])"


def measure(code: str, *args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `python -c code args...`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + PEAK, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"step failed: {code} {args}\n{done.stderr[-2000:]}")
    return wall, int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where checkpoints and GGUFs go (default: a temporary directory)")
    parser.add_argument("--models", default="dart-moe,dantaggen", help=f"comma-separated, from {', '.join(MODELS)}")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dtg-bench-"))
    print(f"{'model':<11} {'step':<22} {'size MiB':>9} {'wall s':>8} {'peak RSS MiB':>13}")
    for name in args.models.split(","):
        spec = MODELS[name]
        directory = workdir / name
        start = time.perf_counter()
        built = not (directory / "config.json").is_file()
        if built:
            build_checkpoint(directory, spec)
        source_mib = sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 2**20
        took = f"{time.perf_counter() - start:8.1f}" if built else f"{'reused':>8}"
        print(f"{name:<11} {'checkpoint (' + spec.dtype + ')':<22} {source_mib:9.0f} {took} {'-':>13}")
        f16 = workdir / f"{name}-F16.gguf"
        wall, rss = measure(STEP_F16, str(directory), str(f16))
        print(f"{name:<11} {'HF -> F16':<22} {f16.stat().st_size / 2**20:9.0f} {wall:8.1f} {rss:13.0f}", flush=True)
        for quant in ("q8_0", "q6_k"):
            out = workdir / f"{name}-{quant.upper()}.gguf"
            wall, rss = measure(STEP_QUANT, str(f16), str(out), quant)
            print(f"{name:<11} {'F16 -> ' + quant.upper():<22} {out.stat().st_size / 2**20:9.0f} {wall:8.1f} {rss:13.0f}", flush=True)
    print(f"files in {workdir}")


if __name__ == "__main__":
    main()
