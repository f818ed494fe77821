"""Compare GGUF files with the checkpoint they came from, position by position, against transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtg_cli.errors import MissingDependencyError
from dtg_cli.quants import FILE_TYPES

INSTALL_HINT = "pip install torch==2.13.0 transformers  (a CPU build of torch is enough)"

# Tags most Danbooru posts have; the Dart verification prompt uses those the vocabulary knows.
_COMMON_TAGS = (
    "1girl solo long hair breasts looking at viewer blush smile short hair open mouth bangs blue eyes "
    "skirt simple background shirt large breasts hair ornament brown hair thighhighs gloves black hair "
    "long sleeves holding dress twintails white background bow navel jewelry purple eyes animal ears "
    "closed mouth underwear medium breasts school uniform tail very long hair red eyes sitting green eyes "
    "hat ponytail collarbone standing yellow eyes cleavage ribbon cat ears"
)


# The most mean KL(checkpoint || GGUF) a faithful F16 file shows: it differs from the checkpoint only by
# rounding. A quantized file's distance depends on the weights as much as on the conversion (random
# full-size weights reach 0.03 in Q8_0), so only the F16 file gets a verdict.
MAX_F16_MEAN_KL = 1e-4


@dataclass(frozen=True)
class Parity:
    """How closely a GGUF reproduces the checkpoint's next-token distributions over a prompt."""

    path: Path
    positions: int
    mean_kl: float
    top1_agreement: float
    max_abs_logit_diff: float
    judged: bool  # an F16 file, held to MAX_F16_MEAN_KL

    @property
    def passed(self) -> bool:
        return not self.judged or self.mean_kl <= MAX_F16_MEAN_KL

    def line(self) -> str:
        figures = (
            f"{self.path.name}: mean KL {self.mean_kl:.3g}, top-1 agreement {self.top1_agreement:.1%}, "
            f"max |logit diff| {self.max_abs_logit_diff:.3g} over {self.positions} positions"
        )
        if not self.judged:
            return figures
        return figures + (": ok" if self.passed else f": FAILED, above the {MAX_F16_MEAN_KL:g} of a faithful F16 file")


def require_reference():
    """Import torch and transformers, or say how to install them."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingDependencyError(f"--verify needs torch and transformers: {INSTALL_HINT}") from e
    return torch, transformers


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(mean KL(reference || candidate), top-1 agreement, max |logit difference|) over positions."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    ref_logp = ref - _logsumexp(ref)
    cand_logp = cand - _logsumexp(cand)
    kl = (np.exp(ref_logp) * (ref_logp - cand_logp)).sum(axis=-1)
    agree = (ref.argmax(-1) == cand.argmax(-1)).mean()
    return float(kl.mean()), float(agree), float(np.abs(ref - cand).max())


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def verification_prompt(checkpoint: Path) -> list[int]:
    """About 60 token ids of a prompt in the checkpoint's own format, tokenized by its HF tokenizer."""
    _, transformers = require_reference()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    vocab = tokenizer.get_vocab()
    if "<general>" not in vocab:  # a LLaMA tokenizer (DanTagGen), from tokenizer.model or tokenizer.json
        text = (
            "quality: masterpiece\nrating: safe\nartist: <|empty|>\ncharacters: hatsune miku\n"
            "copyrights: vocaloid\naspect ratio: 0.7\ntarget: <|long|>\n"
            "general: 1girl, solo, long hair, twintails, aqua hair, smile<|input_end|>"
        )
        return tokenizer(text)["input_ids"]
    tags = [t for t in _split_tags(_COMMON_TAGS) if t in vocab][:47]
    text = (
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character>"
        "<|rating:general|><|aspect_ratio:tall|><|length:long|><general>" + ", ".join(tags) + "<|identity:none|><|input_end|>"
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _split_tags(text: str) -> list[str]:
    """The common-tag string above, read two-word tags first."""
    words = text.split()
    known = {
        "long hair",
        "looking at viewer",
        "short hair",
        "open mouth",
        "blue eyes",
        "simple background",
        "large breasts",
        "hair ornament",
        "brown hair",
        "black hair",
        "long sleeves",
        "white background",
        "purple eyes",
        "animal ears",
        "closed mouth",
        "medium breasts",
        "school uniform",
        "very long hair",
        "red eyes",
        "green eyes",
        "yellow eyes",
        "cat ears",
    }
    tags, i = [], 0
    while i < len(words):
        for n in (3, 2, 1):
            candidate = " ".join(words[i : i + n])
            if n == 1 or candidate in known:
                tags.append(candidate)
                i += n
                break
    return tags


def reference_logits(checkpoint: Path, token_ids: list[int]) -> np.ndarray:
    """The checkpoint's logits at every position, computed by transformers in float32."""
    torch, transformers = require_reference()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([token_ids]))
    return out.logits[0].float().numpy()


def gguf_logits(path: Path, token_ids: list[int], threads: int | None = None) -> np.ndarray:
    from dtg_cli.llama import Context, Model

    with (
        Model(path, n_gpu_layers=0) as model,
        Context(model, n_ctx=max(len(token_ids), 64), n_batch=len(token_ids), n_threads=threads) as ctx,
    ):
        return ctx.logits(token_ids)


def verify(checkpoint: Path, gguf_paths: list[Path], token_ids: list[int] | None = None, threads: int | None = None) -> list[Parity]:
    """Run the checkpoint and each GGUF on the same prompt and measure how far apart they are."""
    require_reference()
    ids = token_ids if token_ids is not None else verification_prompt(checkpoint)
    ref = reference_logits(checkpoint, ids)
    results = []
    for path in gguf_paths:
        kl, agree, diff = compare_logits(ref, gguf_logits(path, ids, threads))
        results.append(Parity(Path(path), len(ids), kl, agree, diff, _file_type(path) == FILE_TYPES["f16"]))
    return results


def _file_type(path: Path) -> int:
    from dtg_cli.gguf_header import read_metadata

    return int(read_metadata(path)["general.file_type"])
