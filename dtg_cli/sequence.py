"""What the engine's modules share about one piece of work: a `Prepared` task (its prompt built and
tokenized) and a `Sequence`, one variant of it decoding in a slot. Below the decoder, the scheduler and the
stepper, which each read and change it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dtg_cli.family import Step
from dtg_cli.outcomes import Stream, Task
from dtg_cli.reading import Layout
from dtg_cli.sampler import Sampler
from dtg_cli.settings import Request, Sampling


@dataclass
class Prepared:
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
    minimum: int  # general tags in a result, input included (`PromptFormat.tag_count_range`)
    maximum: int | None
    conditions: dict
    steps: tuple[Step, ...]  # the model calls of each result (`PromptFormat.steps`)
    retries: int  # continuations of a step that stops below its minimum
    sentences: tuple[int, int | None] = (0, None)  # a written caption's sentences (min, max)
    room: int = 0  # KV cells this task's sequences may fill; 0: all of a sequence's (`schedule`'s `context`)


class Sequence:
    """One variant of a task in a slot of the batch: what is left to decode and what it has made."""

    def __init__(self, prepared: Prepared, variant: int, slot: int):
        self.p = prepared
        self.variant = variant
        self.unit = (prepared.index, variant)
        self.slot = slot
        self.seed = prepared.seeds[variant]
        self.sampler = Sampler(prepared.sampling, self.seed, prepared.bias)
        self.pending = list(prepared.input_ids)  # prompt tokens to decode before the next sampled one
        self.fresh = True  # its slot holds nothing of it yet (`Decoder.attach_head`)
        self.n_past = 0
        self.output_ids: list[int] = []  # of the first pass; continuations are kept apart
        self.pass_ids = self.output_ids
        self.feed = None  # the step's StepDecoder (`Generator.sequence`)
        self.step = 0  # which of the prepared steps is being decoded
        self.call = prepared.steps[0]  # the step of the current model call (a retry continues its field)
        self.nl = prepared.request.nl  # the caption so far
        self.nl_given = self.nl  # the caption the current step was given (its retries read it again)
        self.nl_shown = False  # the caption has started to reach the stream
        self.nl_hold: str | None = ""  # spaces not shown yet; None: a new call's text is to join with one
        self.calls: list[dict] = [  # every model call: task, prompt, input_ids, output_ids, text
            {"task": prepared.steps[0].task or "tags", "prompt": prepared.prompt, "input_ids": prepared.input_ids,
             "output_ids": self.output_ids, "text": ""}
        ]  # fmt: skip
        self.new_tags: list[str] = []
        self.seen = {t.lower() for t in prepared.general} | {k.name.lower() for k in prepared.layout.tags()}
        self.continuations: list[dict] = []
        self.n_new = 0
        self.stop = "max_new_tokens"
        self.started = time.perf_counter()
        self.prompt_s: float | None = None

    def show_nl(self, step: Step, stream: Stream) -> None:
        """Hand the stream the caption text the step has written since the last token, as the result will
        hold it: leading spaces dropped, trailing ones held back until more text follows them."""
        text = self.feed.take_nl()
        if not self.nl_shown:
            text = text.lstrip()
            if not text:
                return
            if step.expand and self.nl:  # a caption being continued: show what it continues first
                text = f"{self.nl} {text}"
            self.nl_shown = True
        elif self.nl_hold is None:  # the first text of a continued call joins with one space
            text = text.lstrip()
            if not text:
                return
            self.nl_hold = " "
        pending = self.nl_hold + text
        shown = pending.rstrip()
        self.nl_hold = pending[len(shown) :]
        if shown:
            stream.nl(self.unit, shown)

    def restart(self, prompt_ids: list[int]) -> None:
        """Decode a new prompt in this slot from scratch (a continuation or the next step)."""
        self.pending, self.fresh = list(prompt_ids), True
        self.sampler.restart()
