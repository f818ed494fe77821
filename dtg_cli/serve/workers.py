"""One decode thread per loaded model, shared by every client: jobs in, events out.

A `Worker` owns a loaded `Generator` and runs its scheduler (`Generator.run`, the same continuous batching
as `dtg batch`) on its own thread, over a `Source` that never ends while the server runs. The HTTP layer
turns each request into a `Job` of tasks and hands it to `Worker.submit`; the decode thread hands the
job's events (a variant started, a tag, caption text, a finished result or an error, the job done) to the
job's `on_event`, which the HTTP layer forwards to its event loop. A job whose client has gone is
dropped at the next decode step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dtg_cli.engine import Generator
from dtg_cli.errors import DtgError
from dtg_cli.outcomes import Outcome, Stream, Task
from dtg_cli.reading import Layout
from dtg_cli.scheduler import DROPPED, END, NOT_READY, Source, context_per_sequence, default_parallel
from dtg_cli.settings import Request

log = logging.getLogger("dtg")

RATE_WINDOW_S = 10.0  # tokens/s in /metrics: over the results of the last this many seconds


class Busy(DtgError):
    """A model's queue is full: the client should try again later (HTTP 429)."""


class Stopped(DtgError):
    """The server is shutting down, or a model's decode thread has failed (HTTP 503)."""


@dataclass(frozen=True)
class Event:
    """What a job hears from the decode thread. `kind`: start (a variant is in a slot; `value` its
    `Layout`), tag (a new tag), nl (more caption text), result (a `Result`), error (a `DtgError`; for a task
    that could not start, once for all its variants) or done (every result of the job is in)."""

    kind: str
    request: int = 0  # which request of the job
    variant: int = 0
    value: Any = None


class Job:
    """The tasks of one HTTP request (one request, or several given together), for one model."""

    def __init__(self, requests: list[Request], on_event: Callable[[Event], None], streaming: bool = False):
        self.tasks = [Task(r, key=(self, i)) for i, r in enumerate(requests)]
        self.on_event = on_event
        self.streaming = streaming  # tags and caption text are only sent to a job that streams
        self.remaining = sum(r.num for r in requests)  # results and errors still to come
        self.cancelled = False  # the client has gone: dropped at the next step

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Counters:
    """What /metrics reports of one model."""

    requests: int = 0  # jobs submitted
    rejected: int = 0  # jobs refused with a full queue
    results: int = 0
    errors: int = 0
    dropped: int = 0  # variants whose client had gone
    tokens: int = 0  # tokens generated, finished results only
    queued: int = 0  # variants submitted and not in a slot yet
    active: int = 0  # variants in a slot
    recent: deque = field(default_factory=deque)  # (time, tokens) of the last RATE_WINDOW_S

    def tokens_per_s(self, now: float) -> float:
        """Tokens of the results finished in the last RATE_WINDOW_S, per second."""
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        return sum(n for _, n in self.recent) / RATE_WINDOW_S


class _Jobs(Source, Stream):
    """The scheduler's endless source of tasks, and its stream: the position of each task it hands out
    (what `Stream`'s units count) leads back to the task's job."""

    def __init__(self, counters: Counters, lock: threading.Lock):
        self.queue: queue.Queue = queue.Queue()
        self.placed: dict[int, Task] = {}  # position -> task, until its last outcome
        self.position_of: dict[int, int] = {}  # id(task) -> position
        self.left: dict[int, int] = {}  # position -> outcomes still to come
        self.started: set[tuple[int, int]] = set()  # units in a slot
        self.position = 0
        self.counters = counters
        self.lock = lock

    def get(self, block: bool):
        try:
            item = self.queue.get(block=block)
        except queue.Empty:
            return NOT_READY
        if item is END:
            self.queue.put(END)
            return END
        self.placed[self.position] = item
        self.position_of[id(item)] = self.position
        self.left[self.position] = item.request.num
        self.position += 1
        return item

    def settle(self, task: Task, variant: int, count: int) -> None:
        """`count` outcomes of a task are in (all of them, for a task that could not start)."""
        position = self.position_of[id(task)]
        with self.lock:
            if count > 1:
                self.counters.queued -= count
            elif (position, variant) in self.started:
                self.started.discard((position, variant))
                self.counters.active -= 1
            else:
                self.counters.queued -= 1
        self.left[position] -= count
        if not self.left[position]:
            del self.left[position], self.placed[position], self.position_of[id(task)]

    def start(self, unit: tuple[int, int], layout: Layout) -> None:
        with self.lock:
            self.started.add(unit)
            self.counters.queued -= 1
            self.counters.active += 1
        job, request = self.placed[unit[0]].key
        if job.streaming and not job.cancelled:
            job.on_event(Event("start", request, unit[1], layout))

    def tag(self, unit: tuple[int, int], tag: str) -> None:
        job, request = self.placed[unit[0]].key
        if job.streaming and not job.cancelled:
            job.on_event(Event("tag", request, unit[1], tag))

    def nl(self, unit: tuple[int, int], text: str) -> None:
        job, request = self.placed[unit[0]].key
        if job.streaming and not job.cancelled:
            job.on_event(Event("nl", request, unit[1], text))


class Worker:
    """A model loaded once, with the thread that decodes for all of its clients."""

    def __init__(self, generator: Generator, *, parallel: int | None = None, context: int | None = None, max_queue: int = 256):
        self.generator = generator
        self.name = generator.name
        model = generator.model
        self.context = min(context, model.n_ctx_train) if context else context_per_sequence(model, 256, generator.defaults.max_new_tokens)
        self.parallel = max(2, parallel or default_parallel(model, self.context))  # one slot follows another path
        self.max_queue = max_queue
        self.counters = Counters()
        self._lock = threading.Lock()  # the open jobs and the counters, shared with the event loop
        self._jobs = _Jobs(self.counters, self._lock)
        self._open: set[Job] = set()  # submitted and not done
        self.failed: BaseException | None = None
        self.stopping = False
        self._thread = threading.Thread(target=self._decode, name=f"dtg-decode-{self.name}", daemon=True)
        self._thread.start()

    def snapshot(self) -> dict:
        """The counters now (`Counters`), with tokens_per_s."""
        with self._lock:
            c = self.counters
            values = {k: v for k, v in vars(c).items() if k != "recent"}
            values["tokens_per_s"] = c.tokens_per_s(time.monotonic())
        return values

    def submit(self, job: Job) -> None:
        """Queue a job's tasks behind those already waiting; raises Busy when `max_queue` jobs are open."""
        with self._lock:
            if self.failed is not None or self.stopping:
                raise Stopped(f"{self.name} is not taking requests: " + ("the server is stopping" if self.stopping else str(self.failed)))
            if len(self._open) >= self.max_queue:
                self.counters.rejected += 1
                raise Busy(f"{self.name} has {len(self._open)} requests open, as many as it queues (dtg serve --max-queue)")
            self._open.add(job)
            self.counters.requests += 1
            self.counters.queued += job.remaining
        for task in job.tasks:
            self._jobs.queue.put(task)

    def close(self, timeout: float | None = None) -> None:
        """Let the thread finish what it has, then stop it; the model is closed when it has ended."""
        self.stopping = True
        self._jobs.queue.put(END)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.generator.close()

    def _decode(self) -> None:
        try:
            outcomes = self.generator.run(
                self._jobs,
                parallel=self.parallel,
                stream=self._jobs,
                context=self.context,
                ordered=False,
                dropped=lambda task: task.key[0].cancelled,
            )
            for outcome in outcomes:
                self._deliver(outcome)
        except BaseException as e:  # reported to every open job; the server reports it on /health
            log.exception(f"{self.name}: the decode thread failed")
            with self._lock:
                self.failed = e
                jobs, self._open = list(self._open), set()
            for job in jobs:
                job.on_event(Event("error", value=Stopped(f"{self.name} failed: {e}")))
                job.on_event(Event("done"))

    def _deliver(self, outcome: Outcome) -> None:
        task: Task = outcome.item
        job, request = task.key
        c = self.counters
        # The scheduler's errors are a task that could not start (one outcome for all its variants) or DROPPED.
        count = task.request.num if outcome.error is not None and outcome.error is not DROPPED else 1
        self._jobs.settle(task, outcome.variant, count)
        with self._lock:
            if outcome.error is DROPPED:
                c.dropped += 1
            elif outcome.error is not None:
                c.errors += 1
            else:
                c.results += 1
                n = outcome.result.timings.get("new_tokens") or 0
                c.tokens += n
                c.recent.append((time.monotonic(), n))
                c.tokens_per_s(time.monotonic())  # keeps the window short
        if not job.cancelled:
            if outcome.result is not None:
                job.on_event(Event("result", request, outcome.variant, outcome.result))
            elif outcome.error is not None:
                job.on_event(Event("error", request, outcome.variant, outcome.error))
        job.remaining -= count
        if job.remaining <= 0:
            with self._lock:
                self._open.discard(job)
            job.on_event(Event("done"))
