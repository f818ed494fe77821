"""Dart v2 (p1atdev): Mistral and Mixtral models with a one-token-per-tag vocabulary (REFERENCE.md section 1).

The GGUF declares no llama.cpp tokenizer and carries the model's tokenizer.json, which dtg runs itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtg_cli.family import Family, Step, TagsOnly
from dtg_cli.prompt import Control, Prompt
from dtg_cli.settings import DEFAULT_ASPECT_RATIO, DEFAULT_IDENTITY, DEFAULT_LENGTH, DEFAULT_RATING, Request, Sampling
from dtg_cli.tokenizers import TagTokenizer
from dtg_cli.wordlevel import HF_JSON_KEY


def dart_aspect_bucket(ratio: float) -> str:
    """Dart v2's five aspect-ratio tokens, by width / height (thresholds from the training code)."""
    if ratio <= 1 / 2:
        return "ultra_tall"
    if ratio <= 8 / 9:
        return "tall"
    if ratio < 9 / 8:
        return "square"
    if ratio < 2:
        return "wide"
    return "ultra_wide"


@dataclass(frozen=True)
class DartV2(TagsOnly):
    """Dart v2: section markers and condition tokens; SFT adds identity and `<|input_end|>`."""

    name: str
    sft: bool
    family: str = "dart-v2"
    stop: tuple[str, ...] = ("</general>", "<|eos|>")

    @property
    def accepts(self) -> frozenset[str]:
        base = {"copyright", "character", "rating", "aspect_ratio", "length"}
        return frozenset(base | {"identity"} if self.sft else base)

    def general_order(self, general: list[str]) -> list[str]:
        # The base models were pretrained on alphabetically sorted lists, and continue one.
        return general if self.sft else sorted(general)

    def build(
        self, request: Request, general: list[str], step: Step | None = None, nl: str | None = None, written: str | None = None
    ) -> Prompt:
        ratio = request.aspect_ratio if request.aspect_ratio is not None else DEFAULT_ASPECT_RATIO
        pieces = [
            Control("<|bos|>"), Control("<copyright>"), ", ".join(request.copyright), Control("</copyright>"),
            Control("<character>"), ", ".join(request.character), Control("</character>"),
            Control(f"<|rating:{request.rating or DEFAULT_RATING}|>"),
            Control(f"<|aspect_ratio:{dart_aspect_bucket(ratio)}|>"),
            Control(f"<|length:{request.length or DEFAULT_LENGTH}|>"),
            Control("<general>"), ", ".join(self.general_order(general)),
        ]  # fmt: skip
        if self.sft:
            pieces += [Control(f"<|identity:{request.identity or DEFAULT_IDENTITY}|>"), Control("<|input_end|>")]
        return Prompt(*pieces)

    def conditions(self, request: Request) -> dict:
        """The conditions as the prompt states them, defaults included."""
        ratio = request.aspect_ratio if request.aspect_ratio is not None else DEFAULT_ASPECT_RATIO
        values = {
            "copyright": list(request.copyright),
            "character": list(request.character),
            "rating": request.rating or DEFAULT_RATING,
            "aspect_ratio": dart_aspect_bucket(ratio),
            "length": request.length or DEFAULT_LENGTH,
        }
        if self.sft:
            values["identity"] = request.identity or DEFAULT_IDENTITY
        return values

    def tag_count_range(self, length: str | None) -> tuple[int, int | None]:
        return 0, None  # the length token steers the model; nothing to enforce afterwards


class DartV2Family(Family):
    name = "dart-v2"
    formats = (DartV2("dart-v2-sft", sft=True), DartV2("dart-v2-base", sft=False))
    # The dartrs library's defaults (REFERENCE.md).
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=100, min_p=0.0, max_new_tokens=256, repeat_penalty=1.0)
    reads_any_text = False

    def reads(self, metadata: dict[str, Any]) -> bool:
        return metadata.get("tokenizer.ggml.model") in (None, "none") and isinstance(metadata.get(HF_JSON_KEY), str)

    def tokenizer(self, model) -> TagTokenizer:
        return TagTokenizer(model.metadata(HF_JSON_KEY), n_vocab=model.n_vocab)

    def tag_vocabulary(self, metadata: dict[str, Any]) -> frozenset[str]:
        return TagTokenizer(metadata[HF_JSON_KEY]).vocabulary

    def guess_format(self, hints: str, path_name: str) -> str:
        return "dart-v2-base" if "base" in hints and "sft" not in hints else "dart-v2-sft"


FAMILY = DartV2Family()
