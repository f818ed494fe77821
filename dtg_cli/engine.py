"""Generation: a loaded GGUF, its tokenizer and prompt format, a sampler, and the decoding loop.

The engine knows no model family by name: it asks the `Family` that reads the GGUF for its tokenizer,
prompt formats, sampling defaults and continuation rule; the prompt format builds the text, the tokenizer
turns generated ids into tags, and the sampler draws from the logits.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from dtg_cli.errors import DtgError, SettingError, UsageError, setting
from dtg_cli.families import detect, formats
from dtg_cli.settings import Request, Sampling
from dtg_cli.tags import Layout, Reading, Style, compile_bans, read, render

log = logging.getLogger("dtg")


# --- sampling ---------------------------------------------------------------------------------------


class Sampler:
    """Temperature, top-k, top-p and min-p, in that order (as transformers applies them); 0 °C is argmax."""

    def __init__(self, settings: Sampling, seed: int, bias: np.ndarray | None = None):
        self.s = settings
        self.rng = np.random.default_rng(seed)
        self.bias = bias

    def __call__(self, logits: np.ndarray) -> int:
        x = logits if self.bias is None else logits + self.bias
        if self.s.temperature == 0:
            return int(np.argmax(x))
        k = self.s.top_k
        # Top-k first, on the raw logits (a positive temperature keeps their order): the float64 work
        # below then touches k values instead of the whole vocabulary.
        ids = np.argpartition(x, x.size - k)[x.size - k :] if 0 < k < x.size else np.arange(x.size)
        z = x[ids].astype(np.float64) / self.s.temperature
        order = np.argsort(-z, kind="stable")
        ids, z = ids[order], z[order]
        p = np.exp(z - z[0])
        p /= p.sum()
        if self.s.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(p), self.s.top_p)) + 1
            ids, p = ids[:keep], p[:keep] / p[:keep].sum()
        if self.s.min_p > 0:
            keep = int(np.count_nonzero(p >= self.s.min_p * p[0]))
            ids, p = ids[:keep], p[:keep] / p[:keep].sum()
        pick = int(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum(), side="right"))
        return int(ids[min(pick, len(ids) - 1)])


# --- what goes in and what comes out -----------------------------------------------------------------


@dataclass
class Task:
    """One prompt for `Generator.run`: a request and, if the caller chooses them, the seed of each of its
    `num` results (by default the request's seed, or a random one, then +1 per result)."""

    request: Request
    seeds: tuple[int, ...] | None = None
    key: Any = None  # the caller's, handed back untouched


@dataclass
class Result:
    """One generated tag list and how it was made."""

    model: str
    prompt: str  # the exact model input text
    input_ids: list[int]
    output_ids: list[int]
    tags: list[str]  # every tag of the result: the flags' tags, the user's tags as written, the new ones
    new_tags: list[str]
    input_tags: list[str]
    seed: int
    stop: str  # "eos", "max_new_tokens", "length" (a length cap) or "context" (the context is full)
    sampling: dict
    timings: dict
    continuations: list[dict] = field(default_factory=list)  # DanTagGen retries: prompt and output ids each
    conditions: dict = field(default_factory=dict)  # the conditions the prompt was built with, defaults included
    layout: Layout | None = field(default=None, repr=False)  # what the user wrote, for `dtg_cli.tags.render`

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "layout"}

    def written(self, style: Style = Style()) -> dict:
        """The result as dtg writes it in `style`: the line (`text`, in the user's syntax) and tag lists."""
        text, tags = render(self.layout, self.new_tags, style)
        return {
            "text": text,
            "tags": tags,
            "new_tags": [style.tag(t, self.layout) for t in self.new_tags],
            "input_tags": [style.tag(t, self.layout) for t in self.input_tags],
        }


@dataclass
class Outcome:
    """What `Generator.run` hands back, in input order: one result of a task, a task that could not run
    (`error`), or an input item that is not a task, passed through untouched (`result` and `error` None)."""

    item: Any
    variant: int = 0
    result: Result | None = None
    error: DtgError | None = None


class Stream:
    """Receives results as they are generated. `unit` is (input position, variant): units start in input
    order, but with several sequences decoded together their tags arrive interleaved."""

    def start(self, unit: tuple[int, int], layout: Layout) -> None: ...

    def tag(self, unit: tuple[int, int], tag: str) -> None: ...


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
        import queue
        import threading

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


# --- the generator ----------------------------------------------------------------------------------

CPU_PARALLEL = 128  # sequences per decode on a CPU; throughput gains flatten past this on small models
GPU_PARALLEL = 255  # with layers offloaded to a GPU (llama.cpp's limit is 256 sequences, one is spare)
UBATCH = 512  # tokens per llama.cpp micro-batch (Context's n_ubatch)
MIN_HEAD = 8  # tokens: a shorter shared prompt head is decoded with the rest of each prompt


def kv_budget() -> int:
    """Bytes of KV cache the default --parallel may fill: an eighth of the machine's memory, between
    512 MiB and 4 GiB (1 GiB where the memory size cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 30
    return max(512 << 20, min(4 << 30, total // 8))


def _chunks(n: int) -> list[int]:
    """How `n` prompt tokens of one sequence are decoded: pieces of at most UBATCH tokens, none of one token
    unless `n` is 1. The cut depends on `n` alone."""
    sizes = []
    while n > UBATCH:
        take = UBATCH - 1 if n == UBATCH + 1 else UBATCH
        sizes.append(take)
        n -= take
    return sizes + [n]


@dataclass
class _Prepared:
    """A task with its prompt built and tokenized, ready to be decoded once per variant."""

    task: Task
    index: int
    request: Request
    sampling: Sampling
    seeds: tuple[int, ...]
    prompt: str
    input_ids: list[int]
    head: list[int]  # the tokens every prompt of the request's conditions starts with (`Generator._head_of`)
    general: list[str]
    layout: Layout  # what the user wrote, to write the result back in
    banned: Callable[[str], bool]
    bias: np.ndarray | None
    minimum: int
    maximum: int | None
    conditions: dict


class _Sequence:
    """One variant of a task in a slot of the batch: what is left to decode and what it has made."""

    def __init__(self, prepared: _Prepared, variant: int, slot: int, tokenizer):
        self.p = prepared
        self.variant = variant
        self.unit = (prepared.index, variant)
        self.slot = slot
        self.seed = prepared.seeds[variant]
        self.sampler = Sampler(prepared.sampling, self.seed, prepared.bias)
        self.pending = list(prepared.input_ids)  # prompt tokens to decode before the next sampled one
        self.fresh = True  # its slot holds nothing of it yet (`Generator._attach_head`)
        self.n_past = 0
        self.output_ids: list[int] = []  # of the first pass; continuations are kept apart
        self.pass_ids = self.output_ids
        self.feed = tokenizer.tag_decoder()
        self.new_tags: list[str] = []
        self.seen = {t.lower() for t in prepared.general} | {k.name.lower() for k in prepared.layout.tags()}
        self.continuations: list[dict] = []
        self.n_new = 0
        self.stop = "max_new_tokens"
        self.started = time.perf_counter()
        self.prompt_s: float | None = None


class Generator:
    """A model loaded once, generating for any number of requests, several sequences at a time."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        prompt_format: str | None = None,
        n_gpu_layers: int = -1,
        threads: int | None = None,
    ):
        from dtg_cli import llama

        started = time.perf_counter()
        self.model = llama.Model(path, n_gpu_layers=n_gpu_layers)
        self.name = name or Path(path).stem
        self.threads = threads
        self.family = detect(self.model.header, path)
        self.tokenizer = self.family.tokenizer(self.model)
        self.format = formats()[prompt_format or detect_prompt_format(self.model, self.family)]
        if self.format.family != self.family.name:
            self.close()
            raise UsageError(
                f"prompt format {self.format.name} is for {self.format.family} models, but {Path(path).name} "
                f"has a {self.family.name} vocabulary; choose one of {', '.join(f.name for f in self.family.formats)}"
            )
        self.stop_ids = {i for i in (self.tokenizer.token_id(t) for t in self.format.stop) if i is not None}
        self.defaults = self.family.sampling
        self.context = None
        self._head: tuple[int, ...] | None = None  # the prompt head held by the context's last sequence
        self._heads: dict[Request, list[int]] = {}  # `_head_of`, by conditions
        self.warn_unknown = True  # False: only count them in `unknown_tags`
        self.unknown_tags: dict[str, int] = {}
        self._last_ban: tuple[tuple[str, ...] | None, np.ndarray | None] = (None, None)
        self.load_s = time.perf_counter() - started

    def close(self) -> None:
        if getattr(self, "context", None) is not None:
            self.context.close()
            self.context = None
        self.model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checks --

    def check(self, request: Request) -> None:
        check_conditions(request, self.format, self.name)

    def _note_unknown(self, reading: Reading) -> None:
        """Warn (once per tag) about input tags the model cannot read as tags: for Dart, those not in its
        vocabulary (each is an <|unk|> token); for DanTagGen, those not in the danbooru database."""
        from dtg_cli.tagdb import database

        vocabulary = self.tokenizer.vocabulary
        for known in reading.unknown:
            key = known.name.lower()
            seen = key in self.unknown_tags
            self.unknown_tags[key] = self.unknown_tags.get(key, 0) + 1
            if not self.warn_unknown or seen:
                continue
            if vocabulary is None:
                what = f"unknown tag {known.written!r}: not in the danbooru tag database (the model reads it as plain text)"
            elif known.count is None:
                what = f"unknown tag {known.written!r}: not in the danbooru tag database nor in {self.name}'s vocabulary, so the model sees <|unk|>"
            else:
                what = f"{known.name!r} is a danbooru {known.category} tag, but not in {self.name}'s vocabulary, so the model sees <|unk|>"
            near = database().suggest(known.name, allowed=(lambda t: t.lower() in vocabulary) if vocabulary is not None else None)
            log.warning(what + (f"; did you mean: {', '.join(near)}" if near else ""))

    # -- sizing --

    def context_per_sequence(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """KV cells per sequence: room for a prompt of at least 256 tokens and the token budget, rounded up
        to 256, at least 512, at most what the model was trained on."""
        need = max(prompt_tokens, 256) + max_new_tokens
        return min(self.model.n_ctx_train, max(512, -(-need // 256) * 256))

    def default_parallel(self, n_ctx_seq: int) -> int:
        """Sequences per decode when the caller does not say: 128 on a CPU (255 with layers on a GPU), fewer
        when their KV cache would pass `kv_budget()`."""
        cap = GPU_PARALLEL if self.model.offloads else CPU_PARALLEL
        by_memory = kv_budget() // (self.model.kv_bytes_per_token * n_ctx_seq)
        return max(1, min(cap, by_memory, self.model.max_sequences() - 1))

    def _context(self, parallel: int, n_ctx_seq: int):
        """A context for `parallel` sequences and one more, the last, which holds the prompt head that
        `_attach_head` copies into a slot."""
        from dtg_cli import llama

        n_seq = parallel + 1
        c = self.context
        if c is None or c.n_seq_max != n_seq or c.n_ctx != n_ctx_seq:
            if c is not None:
                c.close()
                self.context = None
            self._head = None
            self.context = llama.Context(
                self.model, n_ctx=n_ctx_seq * n_seq, n_batch=max(512, 2 * n_seq), n_seq_max=n_seq, n_threads=self.threads
            )
        return self.context

    # -- generation --

    def _ban_mask(self, patterns: tuple[str, ...], banned) -> np.ndarray | None:
        """For one-token-per-tag vocabularies: -inf on every banned tag, so it is never sampled. Matching the
        whole vocabulary takes tens of milliseconds, so the mask of the last ban list is kept for the next
        prompt (a pipeline repeats it on every line)."""
        if not patterns or self.tokenizer.tag_of is None:
            return None
        if self._last_ban[0] != patterns:
            mask = np.zeros(self.model.n_vocab, dtype=np.float32)
            mask[[i for i, tag in self.tokenizer.tag_of.items() if banned(tag)]] = -np.inf
            self._last_ban = (patterns, mask)
        return self._last_ban[1]

    def prepare(self, task: Task, index: int = 0, note_unknown: bool = True) -> _Prepared:
        """Check a task and build its prompt; raises UsageError for what this model cannot do."""
        request = task.request
        self.check(request)
        reading = read(request, self.format.accepts, self.tokenizer.vocabulary)
        request = reading.request
        if note_unknown:
            self._note_unknown(reading)
        sampling = request.sampling.with_defaults(self.defaults)
        if task.seeds is not None:
            if len(task.seeds) != request.num:
                raise ValueError(f"{len(task.seeds)} seeds for {request.num} results")
            seeds = tuple(task.seeds)
        else:
            # A random base leaves room for every result's seed below 2**32.
            base = sampling.seed if sampling.seed is not None else secrets.randbelow(2**32 - request.num + 1)
            if base + request.num > 2**32:
                raise SettingError(f"{setting('seed')} {base} with {setting('num')} {request.num} runs past the largest seed, 4294967295")
            seeds = tuple(base + v for v in range(request.num))
        banned = compile_bans(request.ban)
        general = list(request.tags)
        prompt = self.format.build(request, general)
        input_ids = self.tokenizer.encode(prompt)
        need, limit = len(input_ids) + sampling.max_new_tokens, self.model.n_ctx_train
        if need > limit:
            raise SettingError(f"the prompt and {setting('max_new_tokens')} need {need} tokens; {self.name} takes at most {limit}")
        minimum, maximum = self.format.tag_count_range(request.length)
        return _Prepared(
            task=task, index=index, request=request, sampling=sampling, seeds=seeds, prompt=prompt,
            input_ids=input_ids, head=self._head_of(request), general=general,
            layout=reading.layout,
            banned=banned, bias=self._ban_mask(request.ban, banned), minimum=minimum, maximum=maximum,
            conditions=self.format.conditions(request),
        )  # fmt: skip

    def _head_of(self, request: Request) -> list[int]:
        """The tokens every prompt of these conditions starts with, whatever its tags: decoded once and
        copied to each sequence whose prompt starts with them (a prompt that tokenizes differently at the
        seam decodes whole). Empty when shorter than MIN_HEAD."""
        key = replace(request, tags=(), ban=(), num=1, sampling=Sampling())
        if self._heads.get(key) is None:
            probes = [self.tokenizer.encode(self.format.build(key, tags)) for tags in ([], ["1girl"], ["solo"])]
            n = 0
            while all(n < len(p) and p[n] == probes[0][n] for p in probes):
                n += 1
            if len(self._heads) > 64:
                self._heads.clear()
            self._heads[key] = probes[0][:n] if n >= MIN_HEAD else []
        return self._heads[key]

    def generate(self, request: Request, stream: Stream | None = None, parallel: int | None = None) -> Iterator[Result]:
        """Yield `request.num` results, one per seed (seed, seed + 1, ...), decoded up to `parallel` at a
        time (default: as many as there are results, within `default_parallel`)."""
        for outcome in self.run([Task(request)], parallel=parallel, most=request.num, stream=stream):
            if outcome.error is not None:
                raise outcome.error
            yield outcome.result

    def run(
        self,
        items: Iterable | Source,
        *,
        parallel: int | None = None,
        most: int | None = None,
        stream: Stream | None = None,
    ) -> Iterator[Outcome]:
        """Generate for every `Task` of `items`, up to `parallel` sequences in one decode call; a finished
        sequence's slot takes the next waiting one at once (continuous batching). Outcomes come back in
        input order; items that are not tasks pass through in their place. Sizes not given are chosen from
        the first task (`context_per_sequence`, then `default_parallel`, at most `most`)."""
        source = items if isinstance(items, Source) else IterSource(items)
        waiting: deque[tuple[_Prepared, int]] = deque()  # variants not in a slot yet
        order: deque[list] = deque()  # [unit, outcome or None] in input order
        slots: list[_Sequence | None] = []
        context = None
        window = 0
        index = 0
        ended = False
        while True:
            active = sum(s is not None for s in slots)
            # Take input while there are free slots to fill and the reorder window has room.
            while not ended and len(waiting) < max(len(slots) - active, 1) and (not window or len(order) < window):
                item = source.get(block=not active and not waiting)
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
                    prepared = self.prepare(item, index)
                    if context is None:
                        n_ctx_seq = self.context_per_sequence(len(prepared.input_ids), prepared.sampling.max_new_tokens)
                        if parallel is None:
                            parallel = min(self.default_parallel(n_ctx_seq), most or self.model.max_sequences())
                        context = self._context(parallel, n_ctx_seq)
                        log.info(f"{parallel} sequences per decode, {n_ctx_seq} tokens of context each")
                        slots = [None] * parallel
                        window = max(4 * parallel, 64)
                    if len(prepared.input_ids) >= context.n_ctx:
                        raise SettingError(
                            f"the prompt is {len(prepared.input_ids)} tokens; each sequence has room for {context.n_ctx} "
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
            for i in range(len(slots)):
                if slots[i] is None and waiting:
                    prepared, variant = waiting.popleft()
                    slots[i] = self._start(context, prepared, variant, i, stream)
            while order and order[0][1] is not None:
                yield order.popleft()[1]
            if not any(slots):
                if ended and not waiting and not order:
                    return
                continue
            for sequence in self._step(context, slots, stream):
                slots[sequence.slot] = None
                for entry in order:  # a finished sequence is usually near the front
                    if entry[0] == sequence.unit:
                        entry[1] = Outcome(sequence.p.task, sequence.variant, result=self._result(sequence))
                        break

    def _start(self, context, prepared: _Prepared, variant: int, slot: int, stream: Stream | None) -> _Sequence:
        sequence = _Sequence(prepared, variant, slot, self.tokenizer)
        if stream:
            stream.start(sequence.unit, prepared.layout)
        return sequence

    def _attach_head(self, context, s: _Sequence, rest: int) -> None:
        """Start a fresh sequence's slot: when its pending prompt starts with its conditions' head
        (`Generator._head_of`) and has at least `rest` tokens after it, copy the head from the context's last
        sequence, which decodes it first when it holds another one; else clear the slot. The pending prompt is
        then what follows the head."""
        ids, head = s.pending, s.p.head
        if ids[: len(head)] != head or len(ids) - len(head) < rest:
            head = []
        if head:
            holder, key = context.n_seq_max - 1, tuple(head)
            if self._head != key:
                self._head = None
                context.clear(holder)
                self._decode_alone(context, holder, head, 0, logits=False)
                self._head = key
            context.copy(holder, s.slot)  # llama.cpp copies the data at the start of the next decode
        else:
            context.clear(s.slot)
        s.pending, s.n_past, s.fresh = ids[len(head) :], len(head), False

    @staticmethod
    def _decode_alone(context, seq: int, tokens: list[int], pos: int, logits: bool = True) -> np.ndarray | None:
        """Decode prompt tokens of one sequence with nothing beside them, cut by `_chunks`; the logits after
        the last one, if asked for."""
        out = None
        for size in _chunks(len(tokens)):
            chunk, tokens = tokens[:size], tokens[size:]
            out = context.decode_many([(seq, chunk, pos, logits and not tokens)])[0]
            pos += size
        return out

    def _step(self, context, slots: list[_Sequence | None], stream: Stream | None) -> list[_Sequence]:
        """Decode one token for every sequence in the slots, in one decode: the next token of its prompt, or
        the token it sampled last. Returns the sequences that finished.

        A result must not depend on what is decoded beside it, but llama.cpp's CPU kernels cut their work by
        a decode's whole shape, and the pieces round differently: attention over several tokens of a
        sequence is split by the query rows of all sequences together, and a matrix product of one row uses
        single-row kernels. A micro-batch also holds only sequences with consecutive ids (non-unified KV
        cache). So every decode has one token per sequence, prompts included (after their shared head, which
        is decoded alone); busy sequences are kept in the lowest slots, moved down when one before them
        finishes; a lone one gets a throwaway token beside it, in the next free slot; and when only one row
        needs logits, a second one asks for them too. A one-slot run keeps the faster path of a single
        sequence (`_step_one`)."""
        if len(slots) == 1:
            return self._step_one(context, slots[0], stream)
        self._compact(context, slots)
        members = [s for s in slots if s is not None]
        rows = []
        for s in members:
            if s.fresh:
                self._attach_head(context, s, rest=1)
            if s.pending:
                token = s.pending.pop(0)
                rows.append((s.slot, [token], s.n_past, not s.pending))
            else:
                rows.append((s.slot, [s.pass_ids[-1]], s.n_past, True))
        wanted = [want for *_, want in rows]
        if len(rows) == 1:
            context.clear(1)
            rows.append((1, rows[0][1], 0, wanted[0]))  # logits for both rows, or for neither
        elif wanted.count(True) == 1:
            i = wanted.index(False)
            rows[i] = (*rows[i][:3], True)
        finished = []
        for s, want, logits in zip(members, wanted, context.decode_many(rows), strict=False):
            s.n_past += 1
            if not want:
                continue
            if s.prompt_s is None:
                s.prompt_s = time.perf_counter() - s.started
            if self._advance(context, s, logits, stream):
                finished.append(s)
        return finished

    def _step_one(self, context, s: _Sequence, stream: Stream | None) -> list[_Sequence]:
        """The step of a one-slot run: a pending prompt decoded whole (after its head), else one token."""
        if s.fresh:
            self._attach_head(context, s, rest=2)  # no prompt ends in a decode of one token
        if s.pending:
            ids, s.pending = s.pending, []
            logits = self._decode_alone(context, s.slot, ids, s.n_past)
            s.n_past += len(ids)
            if s.prompt_s is None:
                s.prompt_s = time.perf_counter() - s.started
        else:
            logits = context.decode_many([(s.slot, [s.pass_ids[-1]], s.n_past, True)])[0]
            s.n_past += 1
        return [s] if self._advance(context, s, logits, stream) else []

    @staticmethod
    def _compact(context, slots: list[_Sequence | None]) -> None:
        """Move the sequences of the highest slots into free lower ones, so that slots 0..k-1 are the busy
        ones (llama.cpp copies the KV data at the start of the next decode; a fresh sequence has none)."""
        top = len(slots) - 1
        for free in range(len(slots)):
            if slots[free] is not None:
                continue
            while top > free and slots[top] is None:
                top -= 1
            if top <= free:
                return
            s, slots[top] = slots[top], None
            if not s.fresh:
                context.copy(top, free)
                context.clear(top)
            s.slot, slots[free] = free, s

    def _advance(self, context, s: _Sequence, logits: np.ndarray, stream: Stream | None) -> bool:
        """Sample the next token of a sequence; True when the sequence is finished."""
        p = s.p
        token = s.sampler(logits)
        s.pass_ids.append(token)
        s.n_new += 1
        stop = None
        if token in self.stop_ids:
            stop = "eos"
        else:
            for tag in s.feed(token):
                self._keep(s, tag, stream)
            if p.maximum is not None and len(p.general) + len(s.new_tags) >= p.maximum:
                stop = "length"
            elif s.n_past + 1 >= context.n_ctx:
                stop = "context"
            elif len(s.pass_ids) >= p.sampling.max_new_tokens:
                stop = "max_new_tokens"
        if stop is None:
            return False
        for tag in s.feed(None):
            if p.maximum is None or len(p.general) + len(s.new_tags) < p.maximum:
                self._keep(s, tag, stream)
        s.stop = stop
        if stop == "eos" and len(p.general) + len(s.new_tags) < p.minimum and len(s.continuations) < self.family.max_retries:
            # Stopped short of its length's minimum: continue from everything so far.
            more_prompt = self.format.build(p.request, p.general + s.new_tags)
            more_ids = self.tokenizer.encode(more_prompt)
            if len(more_ids) + 1 < context.n_ctx:
                s.pass_ids = []
                s.continuations.append({"prompt": more_prompt, "input_ids": more_ids, "output_ids": s.pass_ids})
                s.feed = self.tokenizer.tag_decoder()
                s.pending, s.fresh = list(more_ids), True
                return False
        return True

    def _keep(self, s: _Sequence, tag: str, stream: Stream | None) -> None:
        if tag.lower() in s.seen or s.p.banned(tag):
            return
        s.seen.add(tag.lower())
        s.new_tags.append(tag)
        if stream:
            stream.tag(s.unit, tag)

    def _result(self, s: _Sequence) -> Result:
        p = s.p
        elapsed = time.perf_counter() - s.started
        generate_s = elapsed - (s.prompt_s or 0.0)
        return Result(
            model=self.name,
            prompt=p.prompt,
            input_ids=p.input_ids,
            output_ids=s.output_ids,
            tags=render(p.layout, s.new_tags)[1],
            new_tags=s.new_tags,
            input_tags=p.general,
            seed=s.seed,
            stop=s.stop,
            sampling={k: v for k, v in asdict(p.sampling).items() if k != "seed"},
            timings={
                "prompt_s": round(s.prompt_s or 0.0, 6),
                "generate_s": round(generate_s, 6),
                "new_tokens": s.n_new,
                "tokens_per_s": round(s.n_new / generate_s, 1) if generate_s > 0 else None,
            },
            continuations=s.continuations,
            conditions=p.conditions,
            layout=p.layout,
        )


def check_conditions(request: Request, prompt_format, model_name: str) -> None:
    """Refuse conditions a prompt format has no place for, naming the models that have one."""
    from dtg_cli.registry import accepting

    for condition in request.conditions():
        if condition not in prompt_format.accepts:
            others = accepting(lambda f, c=condition: c in f.accepts)
            raise SettingError(
                f"{setting(condition)} is not used by {model_name} (prompt format {prompt_format.name}); "
                f"models that accept it: {', '.join(others) or 'none'}"
            )


def detect_prompt_format(model, family) -> str:
    """Which prompt a GGUF expects, from what it records of its source; see `--prompt-format` to choose."""
    from dtg_cli.registry import registry

    hints = [model.metadata(k) or "" for k in ("dtg.source.repo", "general.source.repo_url", "general.name", "general.basename")]
    hints.append(model.path.name)
    text = " ".join(hints).lower()
    for entry in registry().values():
        if entry.repo.lower() in text and entry.family == family.name:
            return entry.prompt
    return family.guess_format(text, model.path.name)
