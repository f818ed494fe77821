"""What follows each sampled token of a sequence: the tags it keeps, its stop rules, a continuation of a
step that stopped short of its length's minimum, and the next model call of a task chain (TIPO).

`Stepper` holds what this needs of the loaded model (its tokenizer, prompt format, family and stop
tokens); `engine.Generator` owns one and hands it each sequence with the logits of its last decode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dtg_cli.family import Step, sentences

if TYPE_CHECKING:
    import numpy as np

    from dtg_cli.outcomes import Stream
    from dtg_cli.sequence import Sequence


class Stepper:
    """Moves a sequence on by one sampled token, and on to its next model call when one is due."""

    def __init__(self, tokenizer, prompt_format, family, stop_ids: set[int]):
        self.tokenizer = tokenizer
        self.format = prompt_format
        self.family = family
        self.stop_ids = stop_ids

    def advance(self, s: Sequence, logits: np.ndarray, stream: Stream | None, n_ctx: int) -> bool:
        """Sample the next token of a sequence; True when the sequence is finished. `n_ctx`: the cells of
        one sequence in the context."""
        p = s.p
        step = s.call  # this model call's step: one of `p.steps`, or a retry of it that continues its field
        writes_tags = step.writes == "tag"
        token = s.sampler(logits)
        s.pass_ids.append(token)
        s.n_new += 1
        stop = None
        if token in self.stop_ids:
            stop = "eos"
        else:
            for tag in s.feed(token):
                if writes_tags:
                    self._keep(s, tag, stream)
            if stream and not writes_tags:
                s.show_nl(step, stream)
            if s.feed.done:
                stop = "eos"  # the model has written the field the step asked for
            elif writes_tags and p.maximum is not None and len(p.general) + len(s.new_tags) >= p.maximum:
                stop = "length"
            elif not writes_tags and p.sentences[1] is not None and self.caption_full(s, step, p.sentences[1]):
                stop = "length"
            elif s.n_past + 1 >= n_ctx:
                stop = "context"
            elif len(s.pass_ids) >= p.sampling.max_new_tokens:
                stop = "max_new_tokens"
        if stop is None:
            return False
        for tag in s.feed(None):
            if writes_tags and (p.maximum is None or len(p.general) + len(s.new_tags) < p.maximum):
                self._keep(s, tag, stream)
        s.stop = stop
        s.calls[-1]["text"] = self.tokenizer.text([t for t in s.pass_ids if t not in self.stop_ids])
        written = s.feed.nl.strip()
        if not writes_tags:
            s.nl = f"{s.nl} {written}".strip() if step.expand and s.nl else written
        elif s.step + 1 < len(p.steps) and written:
            s.nl = f"{s.nl or ''} {written}".strip()  # a caption the model extended before its tags, for the next step
        if writes_tags:
            short = len(p.general) + len(s.new_tags) < p.minimum
        else:
            short = len(sentences(s.nl or "")) < p.sentences[0]
        if stop == "eos" and short and len(s.continuations) < p.retries:
            # Stopped short of its length's minimum: continue this step from everything so far.
            again = Step(p.steps[s.step].task, step.writes, expand=True)
            if self._restart(s, again, s.continuations, n_ctx):
                return False
        if s.step + 1 < len(p.steps):
            s.step += 1
            if self._restart(s, p.steps[s.step], None, n_ctx):
                return False
            s.stop = "context"
        if s.nl is not None and p.sentences[1] is not None and not writes_tags:
            s.nl = " ".join(sentences(s.nl)[: p.sentences[1]])
        return True

    @staticmethod
    def caption_full(s: Sequence, step: Step, most: int) -> bool:
        """Whether the caption has just ended its `most`-th sentence (the step stops there)."""
        text = f"{s.nl} {s.feed.nl}" if step.expand and s.nl else s.feed.nl
        text = text.rstrip()
        return text.endswith((".", "!", "?")) and len(sentences(text)) >= most

    def _restart(self, s: Sequence, step: Step, continuations: list | None, n_ctx: int) -> bool:
        """Start another model call of a sequence (a retry of its step, given `continuations`, or its next
        step); False when it cannot fit. A caption step's retry reads the caption it was given and continues
        the one it is writing."""
        retry = continuations is not None
        if not retry:
            s.nl_given = s.nl
        written = s.nl if retry and step.writes != "tag" else None
        prompt = self.format.build(s.p.request, s.p.general + s.new_tags, step, s.nl_given if written is not None else s.nl, written)
        ids = self.tokenizer.encode(prompt)
        if len(ids) + 1 >= n_ctx:
            return False
        s.pass_ids = []
        call = {"prompt": prompt, "input_ids": ids, "output_ids": s.pass_ids}
        if continuations is not None:
            continuations.append(call)
        s.calls.append({"task": step.task or "tags", **call, "text": ""})
        s.feed = self.family.decoder(self.tokenizer, step, prompt)
        s.call = step
        s.nl_hold = None if s.nl_shown else ""
        s.restart(ids)
        return True

    def _keep(self, s: Sequence, tag: str, stream: Stream | None) -> None:
        if tag.lower() in s.seen or s.p.banned(tag):
            return
        s.seen.add(tag.lower())
        s.new_tags.append(tag)
        if stream:
            stream.tag(s.unit, tag)
