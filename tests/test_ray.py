"""`dtg batch --ray` on a local Ray cluster started by the tests: output identical to a local run, a worker
killed mid-run, a driver killed and resumed, bad records in place; and `GenerateBatch` for Ray Data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.test_hostile import DTG, dtg

ray = pytest.importorskip("ray", reason='pip install "dtg-cli[ray]" (in the test extra)')

TAGS = ["1girl", "solo", "cat ears", "smile", "long hair", "flower", "night", "hat", "scenery", "1boy", "sky", "dress"]


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU Ray cluster without a dashboard; its address, for the dtg processes to join."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def prompts(path: Path, n: int, seed: int = 0, bad_every: int = 0) -> Path:
    """`n` JSONL records of random tags; every `bad_every`-th has a bad rating."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        record = {"tags": ", ".join(rng.sample(TAGS, 3))}
        if bad_every and i % bad_every == bad_every - 1:
            record["rating"] = "pg"
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def batch(*args, **kwargs) -> subprocess.CompletedProcess:
    return dtg("batch", *args, **kwargs)


def on_ray(address: str, workers: int = 2) -> list[str]:
    return ["--ray", "--ray-address", address, "--workers", str(workers), "--cpus-per-worker", "1"]


@pytest.mark.parametrize("kind", ["dart-moe", "tipo"])
def test_a_ray_run_writes_what_a_local_run_writes(cluster, ggufs, tmp_path, kind):
    model = ggufs[kind]["q8_0"]
    source = prompts(tmp_path / "in.jsonl", 300, seed=1, bad_every=97)
    common = ["-m", model, "--max-new-tokens", "12", "--skip-errors"]
    local = batch(source, "-o", tmp_path / "local.jsonl", *common)
    remote = batch(source, "-o", tmp_path / "ray.jsonl", *common, *on_ray(cluster))
    assert local.returncode == remote.returncode == 0, remote.stderr.decode()
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    skipped = [line for line in remote.stderr.decode().splitlines() if line.startswith("skipped:")]
    assert skipped == [line for line in local.stderr.decode().splitlines() if line.startswith("skipped:")] and len(skipped) == 3
    # Without --skip-errors both stop at the first bad record, with what comes before it written.
    local = batch(source, "-o", tmp_path / "local2.jsonl", *common[:-1])
    remote = batch(source, "-o", tmp_path / "ray2.jsonl", *common[:-1], *on_ray(cluster))
    assert local.returncode == remote.returncode == 1
    assert remote.stderr.decode().splitlines()[-1] == local.stderr.decode().splitlines()[-1]
    assert (tmp_path / "ray2.jsonl").read_bytes() == (tmp_path / "local2.jsonl").read_bytes()


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _worker_pids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::DtgBatchWorker"):
                found.append(int(entry))
    return found


def running(cluster, model, tmp_path, seed: int, ready) -> tuple[Path, Path, list, subprocess.Popen]:
    """A local run's output, then the same 1,200 records started on the cluster, returned once `ready(out)`
    holds (within two minutes) with the driver still running: (input, ray output, options, driver)."""
    source = prompts(tmp_path / "in.jsonl", 1200, seed=seed)
    common = ["-m", model, "--max-new-tokens", "48"]
    assert batch(source, "-o", tmp_path / "local.jsonl", *common).returncode == 0
    out = tmp_path / "ray.jsonl"
    driver = subprocess.Popen([*DTG, "batch", str(source), "-o", str(out), *map(str, common), *on_ray(cluster)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready(out) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be interrupted"
    return source, out, common, driver


def test_a_worker_killed_mid_run_has_its_records_redone(cluster, ggufs, tmp_path):
    _, out, _, driver = running(cluster, ggufs["dart-moe"]["q8_0"], tmp_path, 2, lambda out: _lines(out) >= 50 and len(_worker_pids()) == 2)
    os.kill(_worker_pids()[0], signal.SIGKILL)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr.decode()
    assert out.read_bytes() == (tmp_path / "local.jsonl").read_bytes()  # every record once, in order, the same


def test_a_driver_killed_mid_run_is_resumed(cluster, ggufs, tmp_path):
    source, out, common, driver = running(cluster, ggufs["dart-moe"]["q8_0"], tmp_path, 3, lambda out: _lines(out) >= 100)
    driver.kill()
    driver.communicate(timeout=30)
    assert 0 < _lines(out) < 1200
    resumed = batch(source, "-o", out, *common, "--resume", *on_ray(cluster))
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert out.read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_what_cannot_run_on_ray_is_one_line(ggufs, tmp_path):
    model = ggufs["dart-moe"]["q8_0"]
    source = prompts(tmp_path / "in.jsonl", 3)
    done = batch(source, "-m", model, "--ray", "--ray-address", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1 and done.stderr.decode().strip().startswith("error: cannot reach the Ray cluster at 127.0.0.1:")
    assert len(done.stderr.decode().strip().splitlines()) == 1
    done = batch(source, "-m", model, "--workers", "2")
    assert done.returncode == 2 and "go with --ray" in done.stderr.decode()
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    done = batch(source, "-m", model, "--ray", env={**os.environ, "PYTHONPATH": str(fake.parent)})
    assert done.returncode != 0 and 'pip install "dtg-cli[ray]"' in done.stderr.decode()


def test_generate_batch_for_ray_data_gives_dtg_batchs_results(cluster, ggufs, tmp_path):
    from dtg_cli.batch.cluster import GenerateBatch

    model = ggufs["dart-moe"]["q8_0"]
    rows = [{"tags": ", ".join(random.Random(i).sample(TAGS, 3)), "seed": 100 + i} for i in range(40)]
    rows[5] = {"tags": "1girl", "seed": 5, "rating": "pg"}
    rows[7] = {"tags": "cat ears", "seed": 7, "num": 2, "id": "two"}
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    done = batch(source, "-o", tmp_path / "local.jsonl", "-m", model, "--max-new-tokens", "12", "--skip-errors")
    assert done.returncode == 0, done.stderr.decode()
    place = ("id", "record", "line", "variant")
    local = {
        (r["line"], r["variant"]): {k: v for k, v in r.items() if k not in place} for r in map(json.loads, open(tmp_path / "local.jsonl"))
    }

    for batch_size in (8, 40):
        data = ray.data.from_items(rows).map_batches(
            GenerateBatch, fn_constructor_kwargs={"model": str(model), "max_new_tokens": 12}, concurrency=1, batch_size=batch_size
        )
        out = sorted(data.take_all(), key=lambda r: (r["seed"] or 0, r["variant"]))
        bad = [r for r in out if r["error"]]
        assert len(bad) == 1 and "rating: 'pg' is not one of" in bad[0]["error"] and bad[0]["text"] is None
        good = [r for r in out if not r["error"]]
        assert len(good) == 40  # 38 rows of one result, one of two
        for r in good:
            line = next(i + 1 for i, row in enumerate(rows) if row.get("seed") is not None and row["seed"] + r["variant"] == r["seed"])
            expected = local[(line, r["variant"])]
            got = {k: (json.loads(v) if k in ("conditions", "sampling", "continuations", "steps") else plain(v)) for k, v in r.items()}
            assert {k: got[k] for k in expected} == json.loads(json.dumps(expected))
        assert [r["id"] for r in good if r["id"] is not None] == ["two", "two"]


def plain(value):
    """A value of a Ray Data row as JSON has it (numpy arrays and scalars as lists and numbers)."""
    return value.tolist() if hasattr(value, "tolist") else value


def test_rows_without_seed_or_id_get_seeds_from_their_text(cluster, ggufs):
    from dtg_cli.batch.cluster import GenerateBatch

    rows = [{"tags": t} for t in ("1girl, solo", "cat ears", "scenery, night")]
    seeds = []
    for batch_size in (1, 3):
        data = ray.data.from_items(rows).map_batches(
            GenerateBatch,
            fn_constructor_kwargs={"model": str(ggufs["dart-moe"]["q8_0"]), "max_new_tokens": 4},
            concurrency=1,
            batch_size=batch_size,
        )
        seeds.append(sorted((plain(r["input_tags"])[0], plain(r["seed"])) for r in data.take_all()))
    assert seeds[0] == seeds[1] and len({s for _, s in seeds[0]}) == 3


def test_workers_the_cluster_has_no_room_for_are_given_nothing(cluster, ggufs, tmp_path):
    """Three workers of one CPU on a two-CPU cluster: the third never starts, and the run neither waits for
    it nor sends it a chunk."""
    model = ggufs["dart-moe"]["q8_0"]
    source = prompts(tmp_path / "in.jsonl", 900, seed=4)  # four chunks
    common = ["-m", model, "--max-new-tokens", "4"]
    assert batch(source, "-o", tmp_path / "local.jsonl", *common).returncode == 0
    done = batch(
        source, "-o", tmp_path / "ray.jsonl", *common, "--ray", "--ray-address", cluster, "--workers", "3", "--cpus-per-worker", "1"
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "warning: the Ray cluster has 2 CPUs and 3 workers of 1 CPUs each need 3" in done.stderr.decode()
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
