"""`dtg_cli.__main__`, the process entry: the garbage collector is off while start-up imports, and on
(with start-up's objects frozen) while a command works."""

import os
import subprocess
import sys

import pytest

# Runs `dtg ARGS` with the CLI replaced by a probe that reports the collector's state when the command
# would start.
PROBE = """
import gc, sys
import dtg_cli.cli
def probe(help_page=False):
    print(gc.isenabled(), gc.get_freeze_count() > 0, help_page)
dtg_cli.cli.main = probe
gc.enable()
sys.argv = ["dtg", *sys.argv[1:]]
from dtg_cli.__main__ import main
main()
print(gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize(
    ("args", "collecting"),
    [(["generate", "1girl"], True), (["batch", "in.txt", "-o", "out.jsonl"], True), (["generate", "--help"], False)],
)
def test_collection_is_on_while_a_command_works(args, collecting, tmp_path):
    env = {**os.environ, "DTG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    state, frozen_at_exit = done.stdout.splitlines()
    # collecting, start-up's objects frozen, a help page
    assert state == f"{collecting} {collecting} {not collecting}"
    assert frozen_at_exit == "True"
