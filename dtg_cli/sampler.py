"""Drawing the next token from a model's logits."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from dtg_cli.settings import Sampling


class Sampler:
    """Temperature, top-k, top-p and min-p, in that order (as transformers applies them); 0 °C is argmax."""

    WINDOW = 64  # generated tokens the repeat penalty looks back on (llama-cpp-python's last_n_tokens_size)
    # Below this temperature a token other than the likeliest has a probability under e^-10000 per unit of
    # logit gap, so sampling is greedy; dividing by a temperature near the smallest float would overflow.
    GREEDY_BELOW = 1e-4

    def __init__(self, settings: Sampling, seed: int, bias: np.ndarray | None = None):
        self.s = settings
        self.rng = np.random.default_rng(seed)
        self.bias = bias
        self.recent: deque[int] = deque(maxlen=self.WINDOW)

    def restart(self) -> None:
        """A new model call: the penalty forgets what the last one generated (the prompt is never penalised)."""
        self.recent.clear()

    def __call__(self, logits: np.ndarray) -> int:
        token = self._draw(logits)
        self.recent.append(token)
        return token

    def _draw(self, logits: np.ndarray) -> int:
        x = logits if self.bias is None else logits + self.bias
        penalty = self.s.repeat_penalty
        if penalty not in (None, 1) and self.recent:
            # llama.cpp's rule, first in its chain: a positive logit is divided, a negative one multiplied.
            x = np.array(x, dtype=np.float32)
            ids = np.fromiter(set(self.recent), dtype=np.int64)
            x[ids] = np.where(x[ids] > 0, x[ids] / penalty, x[ids] * penalty)
        if self.s.temperature < self.GREEDY_BELOW:
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


class BanMask:
    """For a one-token-per-tag vocabulary: a bias of -inf on every banned tag, so that it is never sampled.
    Matching the whole vocabulary takes tens of milliseconds, so the mask of the last ban list is kept for
    the next prompt (a pipeline repeats it on every line)."""

    def __init__(self, tag_of: dict[int, str] | None, n_vocab: int):
        self.tag_of = tag_of  # id -> tag; None for a vocabulary that is not one token per tag
        self.n_vocab = n_vocab
        self._last: tuple[tuple[str, ...] | None, np.ndarray | None] = (None, None)

    def __call__(self, patterns: tuple[str, ...], banned: Callable[[str], bool]) -> np.ndarray | None:
        if not patterns or self.tag_of is None:
            return None
        if self._last[0] != patterns:
            mask = np.zeros(self.n_vocab, dtype=np.float32)
            mask[[i for i, tag in self.tag_of.items() if banned(tag)]] = -np.inf
            self._last = (patterns, mask)
        return self._last[1]
