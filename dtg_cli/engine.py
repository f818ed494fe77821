"""Generation: a loaded GGUF, its tokenizer and prompt format, a sampler, and the decoding loop.

The engine knows no model family: the prompt format builds the text, the tokenizer turns generated ids
into tags, and the sampler draws from the logits.
"""

from __future__ import annotations

import codecs
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dtg_cli.errors import ModelFileError, UsageError
from dtg_cli.prompts import FLAGS, FORMATS
from dtg_cli.settings import FAMILY_SAMPLING, Request, Sampling
from dtg_cli.tags import clean, close_matches, compile_bans

log = logging.getLogger("dtg")

MAX_RETRIES = 3  # DanTagGen continuations when a result is shorter than its length target


# --- tokenizers -------------------------------------------------------------------------------------


class WordTokenizer:
    """Dart v2's word-level vocabulary (one token per tag), read from the GGUF's tokenizer.json."""

    def __init__(self, json_text: str):
        from dtg_cli.tokenizer import WordLevelTokenizer

        self.inner = WordLevelTokenizer.from_json(json_text)
        special = self.inner.special_ids
        self.tag_of = {i: t for i, t in self.inner.id_to_token.items() if i not in special}
        self.vocabulary = frozenset(self.tag_of.values())

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def token_id(self, text: str) -> int | None:
        return self.inner.token_to_id.get(text)

    def tag_decoder(self) -> Callable[[int | None], list[str]]:
        def feed(token: int | None) -> list[str]:
            tag = self.tag_of.get(token) if token is not None else None
            return [tag] if tag is not None else []

        return feed


class PieceTokenizer:
    """A SentencePiece model tokenized by llama.cpp (DanTagGen); the model writes comma-separated text."""

    vocabulary = None
    tag_of = None

    def __init__(self, model):
        self.model = model

    def encode(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=True)

    def token_id(self, text: str) -> int | None:
        ids = self.model.tokenize(text, add_special=False, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def tag_decoder(self) -> Callable[[int | None], list[str]]:
        """Feed ids; get back each tag once the comma after it arrives. Feed None at the end for the rest."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = [""]

        def feed(token: int | None) -> list[str]:
            if token is None:
                text, pending[0] = pending[0] + decoder.decode(b"", final=True), ""
                return [" ".join(t.split()) for t in text.split(",") if t.strip()]
            pending[0] += decoder.decode(self.model.piece(token))
            *done, pending[0] = pending[0].split(",")
            return [" ".join(t.split()) for t in done if t.strip()]

        return feed


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
        x = x.astype(np.float64) / self.s.temperature
        k = self.s.top_k
        if 0 < k < x.size:
            ids = np.argpartition(-x, k - 1)[:k]
        else:
            ids = np.arange(x.size)
        order = np.argsort(-x[ids], kind="stable")
        ids, x = ids[order], x[ids[order]]
        p = np.exp(x - x[0])
        p /= p.sum()
        if self.s.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(p), self.s.top_p)) + 1
            ids, p = ids[:keep], p[:keep] / p[:keep].sum()
        if self.s.min_p > 0:
            keep = int(np.count_nonzero(p >= self.s.min_p * p[0]))
            ids, p = ids[:keep], p[:keep] / p[:keep].sum()
        pick = int(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum(), side="right"))
        return int(ids[min(pick, len(ids) - 1)])


# --- results ----------------------------------------------------------------------------------------


@dataclass
class Result:
    """One generated tag list and how it was made."""

    model: str
    prompt: str  # the exact model input text
    input_ids: list[int]
    output_ids: list[int]
    tags: list[str]  # every tag of the result: the conditions' tags, the input tags, then the new ones
    new_tags: list[str]
    input_tags: list[str]
    seed: int
    stop: str  # "eos", "max_new_tokens", "length" (a length cap) or "context" (the context is full)
    sampling: dict
    timings: dict
    continuations: list[dict] = field(default_factory=list)  # DanTagGen retries: prompt and output ids each

    def to_dict(self) -> dict:
        return asdict(self)


class Stream:
    """Receives a generation as it happens (the CLI prints it live on a terminal)."""

    def start(self, variant: int, tags: list[str]) -> None: ...

    def tag(self, variant: int, tag: str) -> None: ...


# --- the generator ----------------------------------------------------------------------------------


class Generator:
    """A model loaded once, generating for any number of requests."""

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
        if self.model.has_text_vocab:
            self.tokenizer = PieceTokenizer(self.model)
        else:
            text = self.model.metadata("tokenizer.huggingface.json")
            if text is None:
                raise ModelFileError(f"{path}: no tokenizer in this GGUF (neither a llama.cpp vocabulary nor tokenizer.huggingface.json)")
            self.tokenizer = WordTokenizer(text)
        self.format = FORMATS[prompt_format or detect_prompt_format(self.model, self.tokenizer)]
        family = "dart-v2" if isinstance(self.tokenizer, WordTokenizer) else "dantaggen"
        if self.format.family != family:
            self.close()
            raise UsageError(
                f"prompt format {self.format.name} is for {self.format.family} models, but {Path(path).name} "
                f"has a {family} vocabulary; choose one of {', '.join(n for n, f in FORMATS.items() if f.family == family)}"
            )
        self.stop_ids = {i for i in (self.tokenizer.token_id(t) for t in self.format.stop) if i is not None}
        self.defaults = FAMILY_SAMPLING[self.format.family]
        self.context = None
        self._warned: set[str] = set()
        self._last_ban: tuple[tuple[str, ...] | None, np.ndarray | None] = (None, None)
        self.load_s = time.perf_counter() - started

    def close(self) -> None:
        if getattr(self, "context", None) is not None:
            self.context.close()
        self.model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checks --

    def check(self, request: Request) -> None:
        check_conditions(request, self.format, self.name)

    def _warn_unknown(self, tags: list[str], what: str) -> None:
        vocabulary = self.tokenizer.vocabulary
        if vocabulary is None:
            return
        for tag in tags:
            if tag.lower() not in vocabulary and tag.lower() not in self._warned:
                self._warned.add(tag.lower())
                near = close_matches(tag, vocabulary)
                hint = f"; close matches: {', '.join(near)}" if near else ""
                log.warning(f"{what} {tag!r} is not in {self.name}'s vocabulary, so the model sees <|unk|>{hint}")

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

    def _ensure_context(self, n_tokens: int) -> None:
        from dtg_cli import llama

        limit = self.model.n_ctx_train
        if n_tokens > limit:
            raise UsageError(f"the prompt and --max-new-tokens need {n_tokens} tokens; {self.name} takes at most {limit}")
        if self.context is None or self.context.n_ctx < n_tokens:
            if self.context is not None:
                self.context.close()
            size = min(limit, -(-max(n_tokens, 512) // 256) * 256)
            self.context = llama.Context(self.model, n_ctx=size, n_batch=min(size, 512), n_threads=self.threads)

    def generate(self, request: Request, stream: Stream | None = None) -> Iterator[Result]:
        """Yield `request.num` results, one per seed (seed, seed + 1, ...). `stream` sees each result's
        given tags when it starts and each new tag as soon as it is generated."""
        self.check(request)
        vocabulary = self.tokenizer.vocabulary
        tidy = lambda tags: clean(tags, vocabulary)  # noqa: E731
        request = _replace_tags(request, tidy)
        self._warn_unknown(list(request.tags), "tag")
        self._warn_unknown(list(request.copyright), "copyright tag")
        self._warn_unknown(list(request.character), "character tag")

        sampling = request.sampling.with_defaults(self.defaults)
        base_seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        banned = compile_bans(request.ban)
        bias = self._ban_mask(request.ban, banned)

        general = list(request.tags)
        prompt = self.format.build(request, general)
        input_ids = self.tokenizer.encode(prompt)
        self._ensure_context(len(input_ids) + sampling.max_new_tokens)
        started = time.perf_counter()
        self.context.truncate(0)
        prompt_logits = self.context.eval(input_ids, 0)
        prompt_s = time.perf_counter() - started
        fixed = [*request.character, *request.copyright, *request.artist]

        for variant in range(request.num):
            seed = (base_seed + variant) % 2**32
            sampler = Sampler(sampling, seed, bias)
            started = time.perf_counter()
            self.context.truncate(len(input_ids))
            new_tags: list[str] = []
            seen = {t.lower() for t in [*fixed, *general]}

            def keep(tag: str, variant=variant, new_tags=new_tags, seen=seen) -> None:
                if tag.lower() in seen or banned(tag):
                    return
                seen.add(tag.lower())
                new_tags.append(tag)
                if stream:
                    stream.tag(variant, tag)

            if stream:
                stream.start(variant, [*fixed, *general])

            minimum, maximum = self.format.tag_count_range(request.length)
            output_ids, stop, n_new = self._sample(input_ids, prompt_logits, sampler, sampling, keep, len(general), maximum, new_tags)
            continuations = []
            while stop == "eos" and len(general) + len(new_tags) < minimum and len(continuations) < MAX_RETRIES:
                # DanTagGen stopped short of its length target: continue from everything so far.
                more_prompt = self.format.build(request, general + new_tags)
                more_ids = self.tokenizer.encode(more_prompt)
                if len(more_ids) + sampling.max_new_tokens > self.model.n_ctx_train:
                    break  # no room to continue: keep what there is
                self._ensure_context(len(more_ids) + sampling.max_new_tokens)
                self.context.truncate(0)
                logits = self.context.eval(more_ids, 0)
                ids, stop, n = self._sample(more_ids, logits, sampler, sampling, keep, len(general), maximum, new_tags)
                n_new += n
                continuations.append({"prompt": more_prompt, "input_ids": more_ids, "output_ids": ids})
            elapsed = time.perf_counter() - started
            if continuations:
                self.context.truncate(0)
                prompt_logits = self.context.eval(input_ids, 0)  # the next variant starts from the prompt again
            yield Result(
                model=self.name,
                prompt=prompt,
                input_ids=input_ids,
                output_ids=output_ids,
                tags=[*fixed, *general, *new_tags],
                new_tags=new_tags,
                input_tags=general,
                seed=seed,
                stop=stop,
                sampling={k: v for k, v in asdict(sampling).items() if k != "seed"},
                timings={
                    "prompt_s": round(prompt_s if variant == 0 else 0.0, 6),
                    "generate_s": round(elapsed, 6),
                    "new_tokens": n_new,
                    "tokens_per_s": round(n_new / elapsed, 1) if elapsed > 0 else None,
                },
                continuations=continuations,
            )

    def _sample(self, input_ids, logits, sampler, sampling, keep, n_general, maximum, new_tags):
        """Sample until a stop token, the token budget, a full context or the length cap."""
        feed = self.tokenizer.tag_decoder()
        output: list[int] = []
        n_past = len(input_ids)
        stop = "max_new_tokens"
        while len(output) < sampling.max_new_tokens:
            token = sampler(logits)
            output.append(token)
            if token in self.stop_ids:
                stop = "eos"
                break
            for tag in feed(token):
                keep(tag)
            if maximum is not None and n_general + len(new_tags) >= maximum:
                stop = "length"
                break
            if n_past + 1 >= self.context.n_ctx:
                stop = "context"
                break
            logits = self.context.eval([token], n_past)
            n_past += 1
        for tag in feed(None):
            if maximum is None or n_general + len(new_tags) < maximum:
                keep(tag)
        return output, stop, len(output)


def check_conditions(request: Request, prompt_format, model_name: str) -> None:
    """Refuse conditions a prompt format has no place for, naming the models that have one."""
    from dtg_cli.registry import accepting

    for condition in request.conditions():
        if condition not in prompt_format.accepts:
            others = accepting(lambda f: condition in f.accepts)
            raise UsageError(
                f"{FLAGS[condition]} is not used by {model_name} (prompt format {prompt_format.name}); "
                f"models that accept it: {', '.join(others) or 'none'}"
            )


def _replace_tags(request: Request, tidy) -> Request:
    from dataclasses import replace

    return replace(
        request,
        tags=tuple(tidy(request.tags)),
        copyright=tuple(tidy(request.copyright)),
        character=tuple(tidy(request.character)),
        artist=tuple(tidy(request.artist)),
        quality=tuple(tidy(request.quality)),
    )


def detect_prompt_format(model, tokenizer) -> str:
    """Which prompt a GGUF expects, from what it records of its source; see `--prompt-format` to choose."""
    from dtg_cli.registry import registry

    hints = [model.metadata(k) or "" for k in ("dtg.source.repo", "general.source.repo_url", "general.name", "general.basename")]
    hints.append(model.path.name)
    text = " ".join(hints).lower()
    for entry in registry().values():
        if entry.repo.lower() in text:
            return entry.prompt
    if isinstance(tokenizer, WordTokenizer):
        return "dart-v2-base" if "base" in text and "sft" not in text else "dart-v2-sft"
    if "delta" in text:
        return "dantaggen-delta"
    if any(v in text for v in ("alpha", "beta", "gamma")):
        return "dantaggen"
    log.warning(f"{model.path.name}: cannot tell which DanTagGen version this is; using the delta prompt (--prompt-format to choose)")
    return "dantaggen-delta"
