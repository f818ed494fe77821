"""How sequences are decoded together in one llama.cpp context, so that a result never depends on what
is decoded beside it.

The determinism contract: for a given model, prompt, seed and settings, every `--parallel` of 2 or more
gives the same tokens (and a one-slot run follows its own, equally fixed path). llama.cpp's CPU kernels
cut their work by a decode's whole shape and the pieces round differently: attention over several
tokens of a sequence is split by the query rows of all sequences together, and a matrix product of one
row uses single-row kernels. A micro-batch also holds only sequences with consecutive ids (non-unified
KV cache). So `Decoder.step` keeps every decode to one shape:

- one token per sequence, prompts included (after their shared head, which is decoded alone, cut by
  `chunks`, a cut that depends on the head's length only);
- busy sequences in the lowest slots, moved down when one before them finishes (`Decoder.compact`);
- never a single row: a lone sequence gets a throwaway copy of its token in the next slot;
- never a single row that wants logits: when only one does, a second one asks for them too.

`tests/test_decoding.py` checks these rules on every decode of a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from dtg_cli.sequence import Sequence

UBATCH = 512  # tokens per llama.cpp micro-batch (Context's n_ubatch)
MIN_HEAD = 8  # tokens: a shorter shared prompt head is decoded with the rest of each prompt


def chunks(n: int) -> list[int]:
    """How `n` prompt tokens of one sequence are decoded: pieces of at most UBATCH tokens, none of one token
    unless `n` is 1. The cut depends on `n` alone."""
    sizes = []
    while n > UBATCH:
        take = UBATCH - 1 if n == UBATCH + 1 else UBATCH
        sizes.append(take)
        n -= take
    return sizes + [n]


# What the decoder hands each sequence's logits to: True when the sequence is finished.
Advance = Callable[[Sequence, np.ndarray], bool]


class Decoder:
    """The sequences of a batch's slots, decoded one step at a time in one llama.cpp context.

    The context has one sequence more than there are slots: the last holds the prompt head (the tokens
    every prompt of the same conditions starts with), which `attach_head` copies into a fresh slot."""

    def __init__(self, context):
        self.context = context
        self.head: tuple[int, ...] | None = None  # the prompt head held by the context's last sequence

    def step(self, slots: list[Sequence | None], advance: Advance) -> list[Sequence]:
        """Decode one token for every sequence in the slots, in one decode (the module's rules): the next
        token of its prompt, or the token it sampled last. Returns the sequences that finished. A one-slot
        run keeps the faster path of a single sequence (`step_one`)."""
        if len(slots) == 1:
            return self.step_one(slots[0], advance)
        self.compact(slots)
        members = [s for s in slots if s is not None]
        rows = []
        for s in members:
            if s.fresh:
                self.attach_head(s, rest=1)
            if s.pending:
                token = s.pending.pop(0)
                rows.append((s.slot, [token], s.n_past, not s.pending))
            else:
                rows.append((s.slot, [s.pass_ids[-1]], s.n_past, True))
        wanted = [want for *_, want in rows]
        if len(rows) == 1:
            self.context.clear(1)
            rows.append((1, rows[0][1], 0, wanted[0]))  # logits for both rows, or for neither
        elif wanted.count(True) == 1:
            i = wanted.index(False)
            rows[i] = (*rows[i][:3], True)
        finished = []
        for s, want, logits in zip(members, wanted, self.context.decode_many(rows), strict=False):
            s.n_past += 1
            if not want:
                continue
            if s.prompt_s is None:
                s.prompt_s = time.perf_counter() - s.started
            if advance(s, logits):
                finished.append(s)
        return finished

    def step_one(self, s: Sequence, advance: Advance) -> list[Sequence]:
        """The step of a one-slot run: a pending prompt decoded whole (after its head), else one token."""
        if s.fresh:
            self.attach_head(s, rest=2)  # no prompt ends in a decode of one token
        if s.pending:
            ids, s.pending = s.pending, []
            logits = self.decode_alone(s.slot, ids, s.n_past)
            s.n_past += len(ids)
            if s.prompt_s is None:
                s.prompt_s = time.perf_counter() - s.started
        else:
            logits = self.context.decode_many([(s.slot, [s.pass_ids[-1]], s.n_past, True)])[0]
            s.n_past += 1
        return [s] if advance(s, logits) else []

    def attach_head(self, s: Sequence, rest: int) -> None:
        """Start a fresh sequence's slot: when its pending prompt starts with its conditions' head and has
        at least `rest` tokens after it, copy the head from the context's last sequence, which decodes it
        first when it holds another one; else clear the slot. The pending prompt is then what follows."""
        ids, head = s.pending, s.p.head
        if ids[: len(head)] != head or len(ids) - len(head) < rest:
            head = []
        if head:
            holder, key = self.context.n_seq_max - 1, tuple(head)
            if self.head != key:
                self.head = None
                self.context.clear(holder)
                self.decode_alone(holder, head, 0, logits=False)
                self.head = key
            self.context.copy(holder, s.slot)  # llama.cpp copies the data at the start of the next decode
        else:
            self.context.clear(s.slot)
        s.pending, s.n_past, s.fresh = ids[len(head) :], len(head), False

    def decode_alone(self, seq: int, tokens: list[int], pos: int, logits: bool = True) -> np.ndarray | None:
        """Decode prompt tokens of one sequence with nothing beside them, cut by `chunks`; the logits after
        the last one, if asked for."""
        out = None
        for size in chunks(len(tokens)):
            chunk, tokens = tokens[:size], tokens[size:]
            out = self.context.decode_many([(seq, chunk, pos, logits and not tokens)])[0]
            pos += size
        return out

    def compact(self, slots: list[Sequence | None]) -> None:
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
                self.context.copy(top, free)
                self.context.clear(top)
            s.slot, slots[free] = free, s
