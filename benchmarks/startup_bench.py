"""Start-up of several source trees of dtg side by side, interleaved in one run.

    git worktree add /tmp/dtg-before 1e9f8ef
    python -m benchmarks.startup_bench --gguf /tmp/bench/dart-moe-Q8_0.gguf /tmp/dtg-before .

Each tree runs as `python -m dtg_cli` with that tree first on PYTHONPATH, from an empty folder (so that
neither the current directory nor an editable install stands in for it); its `.py` files are compiled
first, as pip does when it installs. A virtual environment given in place of a tree (a folder with
`pyvenv.cfg`) runs its installed `bin/dtg`, as a user who ran `pip install .` in it does: that leaves out
whatever the benchmark's own Python loads at start-up (`.pth` files of an editable install, say). Each
`--help` runs with a new, empty DTG_HOME, so a tree that keeps rendered pages there (dtg before 0.2)
renders its page as on a first request. For each command, one process of each tree in turn, `--runs`
times; the median wall time of each. Interleaving matters on a shared machine whose speed drifts between
runs. `--gguf`: a Dart v2 GGUF for the `dtg generate` rows (`benchmarks.generate_bench --workdir DIR`
writes one, `DIR/dart-moe-Q8_0.gguf`).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.generate_bench import run_and_measure

TAGS = "1girl, cat ears, solo, looking at viewer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "trees",
        nargs="+",
        type=Path,
        help="source checkouts of dtg (a folder holding dtg_cli/) or virtual environments dtg is installed in",
    )
    parser.add_argument("--gguf", type=Path, required=True, help="a Dart v2 GGUF for the generate rows")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    scratch = Path(tempfile.mkdtemp(prefix="dtg-startup-"))
    program, env = {}, {}  # per tree: the command that runs dtg, and the variables it runs with
    for i, tree in enumerate(trees):
        env[tree] = {"DTG_HOME": str(scratch / f"home-{i}")}
        if (tree / "pyvenv.cfg").is_file():
            program[tree] = [str(tree / "bin" / "dtg")]
            if not Path(program[tree][0]).is_file():
                raise SystemExit(f"{tree}: a virtual environment without dtg installed")
            continue
        if not (tree / "dtg_cli" / "__init__.py").is_file():
            raise SystemExit(f"{tree}: not a dtg source tree nor a virtual environment")
        program[tree] = [sys.executable, "-m", "dtg_cli"]
        env[tree]["PYTHONPATH"] = str(tree)
        for package in ("dtg_cli", "convert"):
            if (tree / package).is_dir():
                compileall.compile_dir(tree / package, quiet=1)

    generate = ["generate", TAGS, "-m", str(args.gguf), "--seed", "1", "--threads", str(args.threads)]
    commands = {
        "dtg --version": (["--version"], False),
        "dtg --help": (["--help"], True),
        "dtg batch --help": (["batch", "--help"], True),  # the longest page
        "dtg generate, 1 token": ([*generate, "--max-new-tokens", "1"], False),
        "dtg generate, 40 tags": ([*generate, "--max-new-tokens", "40"], False),
    }
    walls: dict[tuple[str, Path], list[float]] = {}
    fresh = 0
    for _ in range(args.runs):
        for label, (command, fresh_home) in commands.items():
            for tree in trees:
                run_env = env[tree]
                if fresh_home:  # a DTG_HOME with no page in it
                    fresh += 1
                    run_env = {**run_env, "DTG_HOME": str(scratch / f"fresh-{fresh}")}
                wall = run_and_measure([*program[tree], *command], env=run_env, cwd=scratch)[0]
                walls.setdefault((label, tree), []).append(wall)
    shutil.rmtree(scratch)

    names = [tree.name for tree in trees]
    print(f"median wall s of {args.runs} processes each, interleaved, {args.threads} threads")
    print(f"{'':<28}" + "".join(f"{name[-14:]:>15}" for name in names))
    for label in commands:
        print(f"{label:<28}" + "".join(f"{statistics.median(walls[(label, tree)]):14.3f}s" for tree in trees))


if __name__ == "__main__":
    main()
