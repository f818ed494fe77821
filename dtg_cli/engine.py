"""The engine: a loaded GGUF generating for any number of requests.

`Generator` loads a model and asks the `Family` that reads it for its tokenizer, prompt formats, sampling
defaults and continuation rule (the engine knows no family by name), prepares each task (its prompt and
token ids), and assembles `Result`s. How sequences share a decode is `dtg_cli.decoding`; which ones run
when is `dtg_cli.scheduler`; drawing a token is `dtg_cli.sampler`; what follows each token (stop rules,
continuations, a task chain's next call) is `dtg_cli.stepping`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from dtg_cli import llama
from dtg_cli.decoding import MIN_HEAD, Decoder
from dtg_cli.errors import SettingError, UsageError, setting
from dtg_cli.families import detect, formats
from dtg_cli.family import Step
from dtg_cli.outcomes import Outcome, Result, Stream, Task
from dtg_cli.reading import UnknownTags, read
from dtg_cli.registry import accepting, registry
from dtg_cli.rendering import render
from dtg_cli.sampler import BanMask
from dtg_cli.scheduler import Source, schedule
from dtg_cli.sequence import Prepared, Sequence
from dtg_cli.settings import Request, Sampling
from dtg_cli.stepping import Stepper
from dtg_cli.tagtext import compile_bans

log = logging.getLogger("dtg")


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
        self._decoder: Decoder | None = None
        self._heads: dict[tuple[Request, Step], list[int]] = {}  # `_head_of`, by conditions and first step
        self.unknown = UnknownTags(self.name, self.tokenizer.vocabulary)
        self._bans = BanMask(self.tokenizer.tag_of, self.model.n_vocab)
        self._stepper = Stepper(self.tokenizer, self.format, self.family, self.stop_ids)
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

    def decoder(self, parallel: int, n_ctx_seq: int) -> Decoder:
        """A decoder over a context for `parallel` sequences and one more, the last, which holds the prompt
        head (`Decoder.attach_head`); the context of the last run is kept when it has that shape."""
        n_seq = parallel + 1
        c = self.context
        if c is None or c.n_seq_max != n_seq or c.n_ctx != n_ctx_seq:
            if c is not None:
                c.close()
                self.context = None
            self.context = llama.Context(
                self.model, n_ctx=n_ctx_seq * n_seq, n_batch=max(512, 2 * n_seq), n_seq_max=n_seq, n_threads=self.threads
            )
            self._decoder = Decoder(self.context)
        return self._decoder

    # -- generation --

    def prepare(self, task: Task, index: int = 0, note_unknown: bool = True) -> Prepared:
        """Check a task and build its prompt; raises UsageError for what this model cannot do."""
        request = task.request
        self.check(request)
        reading = read(request, self.format.accepts, self.tokenizer.vocabulary)
        request = reading.request
        if note_unknown:
            self.unknown.note(reading.unknown)
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
        steps = self.format.steps(request)
        prompt = self.format.build(request, general, steps[0])
        input_ids = self.tokenizer.encode(prompt)
        need, limit = len(input_ids) + sampling.max_new_tokens, self.model.n_ctx_train
        if need > limit:
            raise SettingError(f"the prompt and {setting('max_new_tokens')} need {need} tokens; {self.name} takes at most {limit}")
        minimum, maximum = self.format.tag_count_range(request.length)
        return Prepared(
            task=task, index=index, request=request, sampling=sampling, seeds=seeds, prompt=prompt,
            input_ids=input_ids, head=self._head_of(request, steps[0]), general=general,
            layout=reading.layout,
            banned=banned, bias=self._bans(request.ban, banned), minimum=minimum, maximum=maximum,
            conditions=self.format.conditions(request), steps=steps,
            retries=request.retries if request.retries is not None else self.family.max_retries,
            sentences=self.format.sentence_range(request.length),
        )  # fmt: skip

    def _head_of(self, request: Request, step: Step) -> list[int]:
        """The tokens every first prompt of these conditions starts with, whatever its tags: decoded once and
        copied to each sequence whose prompt starts with them (a prompt that tokenizes differently at the
        seam decodes whole). Empty when shorter than MIN_HEAD."""
        key = (replace(request, tags=(), ban=(), num=1, sampling=Sampling()), step)
        if self._heads.get(key) is None:
            probes = [self.tokenizer.encode(self.format.build(key[0], tags, step)) for tags in ([], ["1girl"], ["solo"])]
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
        **server: Any,
    ) -> Iterator[Outcome]:
        """Generate for every `Task` of `items`, up to `parallel` sequences in one decode call; a finished
        sequence's slot takes the next waiting one at once (continuous batching). Outcomes come back in
        input order; items that are not tasks pass through in their place. Sizes not given are chosen from
        the first task (`context_per_sequence`, then `default_parallel`, at most `most`, and no more
        sequences than an input that ends sooner holds). `server`: `schedule`'s `context`, `ordered` and
        `dropped`, for a caller that serves many clients."""
        return schedule(self, items, parallel=parallel, most=most, stream=stream, **server)

    def sequence(self, prepared: Prepared, variant: int, slot: int) -> Sequence:
        """One variant of a prepared task, to decode in `slot`."""
        s = Sequence(prepared, variant, slot)
        s.feed = self.family.decoder(self.tokenizer, prepared.steps[0], prepared.prompt)
        return s

    def advance(self, s: Sequence, logits: np.ndarray, stream: Stream | None) -> bool:
        """Sample the next token of a sequence; True when the sequence is finished (`dtg_cli.stepping`)."""
        return self._stepper.advance(s, logits, stream, s.p.room or self.context.n_ctx)

    def result(self, s: Sequence) -> Result:
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
            nl=s.nl,
            steps=s.calls,
        )


def check_conditions(request: Request, prompt_format, model_name: str) -> None:
    """Refuse conditions a prompt format has no place for, naming the models that have one."""

    for condition in request.conditions():
        if condition not in prompt_format.accepts:
            others = accepting(lambda f, c=condition: c in f.accepts)
            raise SettingError(
                f"{setting(condition)} is not used by {model_name} (prompt format {prompt_format.name}); "
                f"models that accept it: {', '.join(others) or 'none'}"
            )


def detect_prompt_format(model, family) -> str:
    """Which prompt a GGUF expects, from what it records of its source; see `--prompt-format` to choose."""

    hints = [model.metadata(k) or "" for k in ("dtg.source.repo", "general.source.repo_url", "general.name", "general.basename")]
    hints.append(model.path.name)
    text = " ".join(hints).lower()
    for entry in registry().values():
        if entry.repo.lower() in text and entry.family == family.name:
            return entry.prompt
    return family.guess_format(text, model.path.name)
