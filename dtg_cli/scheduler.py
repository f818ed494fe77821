"""Continuous batching: tasks taken from a `Source` as slots free up, results handed back in input order.

`schedule` is the loop behind `Generator.run`. It asks the generator to prepare each task, sizes the
context from the first one, starts each variant of a task in a free slot, steps the `Decoder` and hands
back `Outcome`s in input order, holding at most a window of finished ones that wait for an earlier one.
A server (`dtg_cli.serve`) runs it with a fixed context, outcomes as they finish, and tasks its
clients have given up dropped at the next step.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dtg_cli.decoding import Decoder
from dtg_cli.errors import DtgError, SettingError, setting
from dtg_cli.outcomes import Outcome, Result, Stream, Task
from dtg_cli.sequence import Prepared, Sequence

if TYPE_CHECKING:
    from dtg_cli.llama import Model

log = logging.getLogger("dtg")

CPU_PARALLEL = 128  # sequences per decode on a CPU; throughput gains flatten past this on small models
GPU_PARALLEL = 255  # with layers offloaded to a GPU (llama.cpp's limit is 256 sequences, one is spare)


def kv_budget() -> int:
    """Bytes of KV cache the default --parallel may fill: an eighth of the machine's memory, between
    512 MiB and 4 GiB (1 GiB where the memory size cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 30
    return max(512 << 20, min(4 << 30, total // 8))


def context_per_sequence(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """KV cells per sequence: room for a prompt of at least 256 tokens and the token budget, rounded up
    to 256, at least 512, at most what the model (`dtg_cli.llama.Model`) was trained on."""
    need = max(prompt_tokens, 256) + max_new_tokens
    return min(model.n_ctx_train, max(512, -(-need // 256) * 256))


def default_parallel(model, n_ctx_seq: int) -> int:
    """Sequences per decode when the caller does not say: 128 on a CPU (255 with layers on a GPU), fewer
    when their KV cache would pass `kv_budget()`."""
    cap = GPU_PARALLEL if model.offloads else CPU_PARALLEL
    by_memory = kv_budget() // (model.kv_bytes_per_token * n_ctx_seq)
    return max(1, min(cap, by_memory, model.max_sequences() - 1))


class Runner(Protocol):
    """What `schedule` asks of the generator it runs for (`dtg_cli.engine.Generator`)."""

    model: Model  # its sizes choose the run's shape

    def prepare(self, task: Task, index: int) -> Prepared: ...

    def decoder(self, parallel: int, n_ctx_seq: int) -> Decoder: ...

    def sequence(self, prepared: Prepared, variant: int, slot: int) -> Sequence: ...

    def advance(self, s: Sequence, logits: np.ndarray, stream: Stream | None) -> bool: ...

    def result(self, s: Sequence) -> Result: ...


DROPPED = DtgError("dropped: its caller gave it up")  # the error of the outcomes of a dropped task

END = object()  # a source has no more items
NOT_READY = object()  # a source has nothing yet; asking again later may give more


class Source:
    """Where `Generator.run` takes its items from, one at a time."""

    def get(self, block: bool):
        """The next item, END, or (only when not `block`) NOT_READY."""
        raise NotImplementedError


class QueuedSource(Source):
    """Items of an iterable read by a background thread. The engine takes what has arrived without
    waiting while it has sequences to decode, so a slow producer (a pipe) never stalls them, and a
    producer that waits for each answer before writing the next prompt does not deadlock."""

    def __init__(self, iterable: Iterable, maxsize: int = 256):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._empty = queue.Empty

        def pump() -> None:
            try:
                for item in iterable:
                    self._queue.put((True, item))
                self._queue.put((True, END))
            except BaseException as e:  # handed to the reader, which raises it
                self._queue.put((False, e))

        threading.Thread(target=pump, name="dtg-input", daemon=True).start()

    def get(self, block: bool):
        try:
            ok, item = self._queue.get(block=block)
        except self._empty:
            return NOT_READY
        if not ok:
            raise item
        if item is END:
            self._queue.put((True, END))  # stays ended for any later call
        return item


class IterSource(Source):
    """Items of an iterable, taken as they are needed."""

    def __init__(self, iterable: Iterable):
        self._it = iter(iterable)

    def get(self, block: bool):
        return next(self._it, END)


def schedule(
    generator: Runner,
    items: Iterable | Source,
    *,
    parallel: int | None,
    most: int | None,
    stream: Stream | None,
    context: int | None = None,
    ordered: bool = True,
    dropped: Callable[[Task], bool] | None = None,
) -> Iterator[Outcome]:
    """Generate for every `Task` of `items`, up to `parallel` sequences in one decode; a finished sequence's
    slot takes the next waiting one at once. Outcomes come back in input order; items that are not tasks
    pass through in their place. Sizes not given are chosen from the first task
    (`context_per_sequence`, then `default_parallel`, at most `most`, and no more sequences than an input
    that ends sooner holds).

    For a long-running caller that mixes unrelated tasks (a server): `context` fixes the KV cells of every
    sequence, and each task keeps the room it would have alone (`context_per_sequence` of its own prompt
    and token budget, so that its results are those of a run of it alone; one that needs more than
    `context` is refused); `ordered=False` hands each outcome back as soon as it is finished; `dropped`
    names tasks whose caller has given up: their sequences leave their slots before the next decode and
    their outcomes carry `DROPPED`."""
    source = items if isinstance(items, Source) else IterSource(items)
    waiting: deque[tuple[Prepared, int]] = deque()  # variants not in a slot yet
    order: deque[list] = deque()  # [unit, outcome or None] in input order
    slots: list[Sequence | None] = []
    decoder = None
    n_ctx_seq = 0  # KV cells per sequence, from the first task
    cap = 0  # sequences the run may have: `parallel`, else the default for the first task, at most `most`
    window = 0
    index = 0
    ended = False
    while True:
        yield from _ready(order, ordered)  # before waiting for more input: a caller may wait for these
        active = sum(s is not None for s in slots)
        # Take input while there are free slots to fill and the reorder window has room. Before the run is
        # sized, that is up to `cap` variants: an input that ends first gets a context for what it holds.
        while (
            not ended
            and len(waiting) < (max(cap, 1) if decoder is None else max(len(slots) - active, 1))
            and (not window or len(order) < window)
        ):
            # Wait for input only with nothing to decode and nothing to hand back (a caller may wait for that).
            item = source.get(block=not active and not waiting and not _any_ready(order, ordered))
            if item is NOT_READY:
                break
            if item is END:
                ended = True
                break
            if not isinstance(item, Task):
                order.append([(index, 0), Outcome(item)])
                index += 1
                continue
            try:
                prepared = generator.prepare(item, index)
                alone = context_per_sequence(generator.model, len(prepared.input_ids), prepared.sampling.max_new_tokens)
                if not n_ctx_seq:
                    n_ctx_seq = context or alone
                    cap = parallel or min(default_parallel(generator.model, n_ctx_seq), most or generator.model.max_sequences())
                if context:
                    if alone > context:
                        raise SettingError(
                            f"the prompt ({len(prepared.input_ids)} tokens) and {setting('max_new_tokens')} "
                            f"({prepared.sampling.max_new_tokens}) need a context of {alone} tokens; this run has {context} per sequence"
                        )
                    prepared.room = alone
                room = prepared.room or (decoder.context.n_ctx if decoder is not None else n_ctx_seq)
                if len(prepared.input_ids) >= room:
                    raise SettingError(
                        f"the prompt is {len(prepared.input_ids)} tokens; each sequence has room for {room} "
                        f"(a lower {setting('max_new_tokens')} leaves more)"
                    )
            except DtgError as e:
                order.append([(index, 0), Outcome(item, error=e)])
                index += 1
                continue
            for variant in range(prepared.request.num):
                order.append([(index, variant), None])
                waiting.append((prepared, variant))
            index += 1
        if decoder is None and waiting:
            # Sized once: `cap` sequences, or, for an input that ended with fewer variants than that, as many
            # as it holds (at least two: a one-slot run follows another path, `decoding.py`). A KV cache
            # for idle sequences costs memory and seconds to clear.
            if parallel is None:
                parallel = min(cap, max(2, len(waiting))) if ended else cap
            decoder = generator.decoder(parallel, n_ctx_seq)
            log.info(f"{parallel} sequences per decode, {n_ctx_seq} tokens of context each")
            slots = [None] * parallel
            window = max(4 * parallel, 64)
        for i in range(len(slots)):
            if slots[i] is None and waiting:
                prepared, variant = waiting.popleft()
                slots[i] = generator.sequence(prepared, variant, i)
                if stream:
                    stream.start(slots[i].unit, prepared.layout)
        if dropped is not None:
            _drop(slots, waiting, order, dropped)
        yield from _ready(order, ordered)
        if not any(slots):
            if ended and not waiting and not order:
                return
            continue
        for sequence in decoder.step(slots, lambda s, logits: generator.advance(s, logits, stream)):
            slots[sequence.slot] = None
            for entry in order:  # a finished sequence is usually near the front
                if entry[0] == sequence.unit:
                    entry[1] = Outcome(sequence.p.task, sequence.variant, result=generator.result(sequence))
                    break


def _ready(order: deque[list], ordered: bool) -> list[Outcome]:
    """Take the outcomes that may be handed back now out of `order`: its finished front, or (not `ordered`)
    every finished one."""
    ready = []
    if ordered:
        while order and order[0][1] is not None:
            ready.append(order.popleft()[1])
    elif any(entry[1] is not None for entry in order):
        kept = [entry for entry in order if entry[1] is None]
        ready = [entry[1] for entry in order if entry[1] is not None]
        order.clear()
        order.extend(kept)
    return ready


def _any_ready(order: deque[list], ordered: bool) -> bool:
    if ordered:
        return bool(order) and order[0][1] is not None
    return any(entry[1] is not None for entry in order)


def _drop(slots: list[Sequence | None], waiting: deque, order: deque[list], dropped: Callable[[Task], bool]) -> None:
    """Take the variants of dropped tasks out of their slots and out of the waiting line; each one's
    outcome is `DROPPED`."""
    gone = {}
    for i, s in enumerate(slots):
        if s is not None and dropped(s.p.task):
            slots[i] = None
            gone[s.unit] = Outcome(s.p.task, s.variant, error=DROPPED)
    for prepared, variant in list(waiting):
        if dropped(prepared.task):
            waiting.remove((prepared, variant))
            gone[(prepared.index, variant)] = Outcome(prepared.task, variant, error=DROPPED)
    if gone:
        for entry in order:
            if entry[0] in gone:
                entry[1] = gone[entry[0]]
