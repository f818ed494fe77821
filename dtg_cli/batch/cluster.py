"""`dtg batch --ray`: the engine's work done by Ray actors across a cluster, the rest as locally.

The driver reads, validates, shards and resumes records and writes the output exactly as a local run
does (`batch.run.expand`); only `Generator.run` is replaced. `RayWorkers` starts N actors, each of which
loads the model once and runs the same continuous batching over the chunks of tasks it is given; the
driver keeps a bounded window of chunks in flight and hands outcomes back in input order. An actor that
dies is restarted by Ray, which runs its chunk again there (`max_restarts`, `max_task_retries`): results
do not depend on where or beside what a task is decoded, so the output is the same.

How a model reaches the actors: a registry name is opened on each node as by `dtg generate` (from that
node's dtg cache, downloaded there once if it is missing); a .gguf path must be readable at that path on
every node (shared storage). docs/ray.md says more.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

from dtg_cli.errors import DtgError, MissingDependencyError, UsageError
from dtg_cli.outcomes import Outcome
from dtg_cli.output import json_text, result_record
from dtg_cli.scheduler import END, Source

log = logging.getLogger("dtg")

RESTARTS = 4  # times Ray restarts a dead actor, and retries the chunk it was running
WINDOW = 2  # chunks in flight per actor: one decoding, one waiting


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError('--ray needs Ray: pip install "dtg-cli[ray]"') from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once an address no Ray cluster answers at (ray.init would wait minutes)."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: give HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise DtgError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


class DtgBatchWorker:
    """One Ray actor: the model loaded once, generating for each chunk of tasks it is given."""

    def __init__(self, model: str, quant: str, open_options: dict, parallel: int | None):
        from dtg_cli.api import open_model

        self.generator = open_model(model, quant, **open_options)
        self.parallel = parallel

    def run(self, tasks: list) -> list[Outcome]:
        return list(self.generator.run(tasks, parallel=self.parallel))

    def pid(self) -> int:
        return os.getpid()


class RayWorkers:
    """N actors of the same model on a Ray cluster (started here when no address is given)."""

    def __init__(
        self,
        model: str,
        quant: str,
        *,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float | None = None,
        gpus_per_worker: float = 0,
        prompt_format: str | None = None,
        n_gpu_layers: int = -1,
        parallel: int | None = None,
        chunk: int = 256,
    ):
        ray = import_ray()
        self.ray = ray
        if address:
            check_reachable(address)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                quiet = not log.isEnabledFor(logging.INFO)  # Ray's own notices only with -v
                ray.init(
                    address=address,
                    include_dashboard=False,
                    logging_level=logging.ERROR if quiet else logging.INFO,
                    log_to_driver=not quiet,
                )
            except ConnectionError as e:
                raise DtgError(f"cannot reach the Ray cluster{f' at {address}' if address else ''}: {e}") from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.count = workers or max(1, len(nodes))
        cpus = cpus_per_worker or max(1, total_cpus // self.count)
        threads = max(1, int(cpus))
        if self.count * cpus > total_cpus:
            log.warning(
                f"the Ray cluster has {total_cpus} CPUs and {self.count} workers of {cpus:g} CPUs each need {self.count * cpus:g}: "
                "those that do not fit wait until the cluster grows"
            )
        actor = ray.remote(DtgBatchWorker).options(
            num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=RESTARTS, max_task_retries=RESTARTS, name=None
        )
        open_options = {"prompt_format": prompt_format, "n_gpu_layers": n_gpu_layers, "threads": threads}
        self.actors = [actor.remote(model, quant, open_options, parallel) for _ in range(self.count)]
        self.chunk = chunk
        log.info(f"Ray: {self.count} workers, {cpus:g} CPUs{f' and {gpus_per_worker:g} GPUs' if gpus_per_worker else ''} each")

    def run(self, source: Source, parallel: int | None = None) -> Iterator[Outcome]:
        """Every item of `source`, in chunks to the actors that have started (the least busy first);
        outcomes in input order (`Generator.run`'s contract). While some actors are still starting, a
        started one holds one chunk at a time, so that the chunks wait for the others rather than pile up
        on the first; then WINDOW each. An actor the cluster has no room for is given nothing."""
        starting = {a.pid.remote(): a for a in self.actors}  # answered once an actor is up (its model loaded)
        load: dict = {}  # started actor -> chunks in flight
        pending: deque = deque()  # (chunk result, actor) in submission order
        ended = False
        while True:
            if starting:
                done, _ = self.ray.wait(list(starting), num_returns=len(starting), timeout=0)
                for ref in done:
                    load[starting.pop(ref)] = 0
            most = 1 if starting else WINDOW
            while not ended and load and load[actor := min(load, key=load.get)] < most:
                chunk = []
                while len(chunk) < self.chunk:
                    item = source.get(True)
                    if item is END:
                        ended = True
                        break
                    chunk.append(item)
                if chunk:
                    pending.append((actor.run.remote(chunk), actor))
                    load[actor] += 1
            if ended and not pending:
                return
            if starting and (not pending or not self.ray.wait([pending[0][0]], timeout=0)[0]):
                # Nothing to hand back yet: wait for the first chunk or for another actor to start.
                self.ray.wait([*([pending[0][0]] if pending else []), *starting], num_returns=1)
                continue
            ref, actor = pending.popleft()
            try:
                outcomes = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:
                raise DtgError(f"a Ray worker failed {RESTARTS} times over: {_first_line(e)}") from None
            load[actor] -= 1
            yield from outcomes

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started_here:
            self.ray.shutdown()

    def __enter__(self) -> RayWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


class GenerateBatch:
    """For Ray Data pipelines: `Dataset.map_batches(GenerateBatch, fn_constructor_kwargs={...}, concurrency=N)`.

    The constructor takes the model (a registry name or a .gguf path every node can read), `quant`,
    `base_seed`, `parallel`, `threads`, `n_gpu_layers`, `prompt_format`, and any settings for every row
    (rating, length, ...). A batch has a `tags` column and, optionally, a column per setting of a
    `dtg batch` record (rating, seed, num, nl, id, ...), which wins over the constructor's. Each result
    is a row: its record's fields (`conditions`, `sampling`, `continuations` and `steps` as JSON text, so
    that every batch has the same schema), `variant`, the row's `id` if it has one, and `error` (None, or
    why the row could not run: its other fields are then empty). A row without `seed` or `id` gets seeds
    derived from the base seed and its tags and caption, so its results do not depend on the batch it
    falls in.
    """

    def __init__(self, model: str = "dart-v2-moe-sft", quant: str = "q8_0", *, base_seed: int = 0, parallel: int | None = None,
                 threads: int | None = None, n_gpu_layers: int = -1, prompt_format: str | None = None, **options: Any):  # fmt: skip
        from dtg_cli.api import open_model
        from dtg_cli.settings import Request

        request = Request.from_settings(options)  # a bad value fails here, once
        self.generator = open_model(model, quant, prompt_format=prompt_format, n_gpu_layers=n_gpu_layers, threads=threads, request=request)
        self.options = options
        self.base_seed = base_seed
        self.parallel = parallel

    def __call__(self, batch: dict) -> dict[str, list]:
        from dtg_cli.batch.records import BadRecord, Record
        from dtg_cli.batch.tasks import build_task

        columns = list(batch)
        rows = len(batch[columns[0]]) if columns else 0
        tasks = []
        for i in range(rows):
            fields = {c: v for c in columns if (v := _plain(batch[c][i])) is not None}
            if "seed" not in fields and "id" not in fields:
                fields["id"] = json.dumps([fields.get("tags", ""), fields.get("nl")], ensure_ascii=False)
                given_id = None
            else:
                given_id = fields.get("id")
            try:
                tasks.append((given_id, build_task(Record(i, i + 1, fields), self.options, {}, self.base_seed)))
            except DtgError as e:
                tasks.append((given_id, BadRecord(i, i + 1, "", str(e))))
        out: dict[str, list] = {name: [] for name in OUTPUT_COLUMNS}
        ids = {id(task): given for given, task in tasks}
        for outcome in self.generator.run([task for _, task in tasks], parallel=self.parallel):
            item = outcome.item
            error = item.message if isinstance(item, BadRecord) else (str(outcome.error) if outcome.error is not None else None)
            row = {"id": ids[id(item)], "variant": outcome.variant, "error": error}
            if outcome.result is not None:
                record = result_record(outcome.result)
                for name in JSON_COLUMNS:
                    record[name] = json_text(record[name])
                row.update(record)
            for name in OUTPUT_COLUMNS:
                out[name].append(row.get(name))
        return out


JSON_COLUMNS = ("conditions", "sampling", "continuations", "steps")
OUTPUT_COLUMNS = ("id", "variant", "error", "seed", "model", "conditions", "sampling", "input_tags", "new_tags", "tags", "text", "nl", "stop",
                  "prompt", "input_ids", "output_ids", "continuations", "steps")  # fmt: skip


def _plain(value: Any) -> Any:
    """A Ray Data cell as a record field: numpy scalars and arrays as Python values; a missing one (None, NaN) as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value
