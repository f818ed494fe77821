"""DanTagGen (KBlueLeaf): LLaMA models with the llama-2 SentencePiece vocabulary, which llama.cpp tokenizes
(REFERENCE.md section 2)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dtg_cli.family import Family, Step, TagsOnly
from dtg_cli.prompt import Control, Prompt
from dtg_cli.settings import DEFAULT_ASPECT_RATIO, DEFAULT_LENGTH, DEFAULT_RATING, Request, Sampling
from dtg_cli.tagtext import is_special
from dtg_cli.tokenizers import TextTokenizer

log = logging.getLogger("dtg")

# DanTagGen was trained on these four rating words (the model card's widget uses "safe").
DANTAGGEN_RATINGS = {
    "sfw": "safe",
    "general": "safe",
    "sensitive": "sensitive",
    "questionable": "nsfw",
    "nsfw": "nsfw",
    "explicit": "explicit",
}
# DanTagGen has no medium target: ask for long and stop before 30 general tags, Dart's medium range.
DANTAGGEN_TARGETS = {"very_short": "very_short", "short": "short", "medium": "long", "long": "long", "very_long": "very_long"}
# The author's runner retries until a result has at least this many general tags (REFERENCE.md).
DANTAGGEN_MINIMUM = {"very_short": 8, "short": 16, "medium": 20, "long": 32, "very_long": 48}
DANTAGGEN_MAXIMUM = {"medium": 29}


@dataclass(frozen=True)
class DanTagGen(TagsOnly):
    """DanTagGen's field lines; delta and delta-rev2 add a first `quality:` line."""

    name: str
    quality_line: bool
    family: str = "dantaggen"
    stop: tuple[str, ...] = ("</s>",)

    @property
    def accepts(self) -> frozenset[str]:
        base = {"copyright", "character", "artist", "rating", "aspect_ratio", "length"}
        return frozenset(base | {"quality"} if self.quality_line else base)

    def general_order(self, general: list[str]) -> list[str]:
        """People counts (1girl, no humans, ...) first, as in training; otherwise the given order."""
        return [t for t in general if is_special(t)] + [t for t in general if not is_special(t)]

    def build(
        self, request: Request, general: list[str], step: Step | None = None, nl: str | None = None, written: str | None = None
    ) -> Prompt:
        def field(tags: tuple[str, ...]) -> str:
            return ", ".join(tags) or Control("<|empty|>")

        ordered = self.general_order(general)
        special = [t for t in ordered if is_special(t)]
        rest = ordered[len(special) :]
        ratio = request.aspect_ratio if request.aspect_ratio is not None else DEFAULT_ASPECT_RATIO
        pieces = ["quality: ", field(request.quality), "\n"] if self.quality_line else []
        pieces += [
            f"rating: {DANTAGGEN_RATINGS[request.rating or DEFAULT_RATING]}\n",
            "artist: ", field(request.artist), "\n",
            "characters: ", field(request.character), "\n",
            "copyrights: ", field(request.copyright), "\n",
            f"aspect ratio: {ratio:.1f}\n",
            "target: ", Control(f"<|{DANTAGGEN_TARGETS[request.length or DEFAULT_LENGTH]}|>"), "\n",
            # Written exactly as the author's runner writes it: the ", " stays even with no people count.
            f"general: {', '.join(special)}, {', '.join(rest)}", Control("<|input_end|>"),
        ]  # fmt: skip
        return Prompt(*pieces)

    def conditions(self, request: Request) -> dict:
        """The conditions as the prompt states them, defaults included (`length` is the requested one)."""
        ratio = request.aspect_ratio if request.aspect_ratio is not None else DEFAULT_ASPECT_RATIO
        values = {"quality": list(request.quality)} if self.quality_line else {}
        values.update(
            rating=DANTAGGEN_RATINGS[request.rating or DEFAULT_RATING],
            artist=list(request.artist),
            character=list(request.character),
            copyright=list(request.copyright),
            aspect_ratio=round(ratio, 1),
            length=request.length or DEFAULT_LENGTH,
        )
        return values

    def tag_count_range(self, length: str | None) -> tuple[int, int | None]:
        """(minimum, maximum) general tags in a result, input included, for the requested length."""
        length = length or DEFAULT_LENGTH
        return DANTAGGEN_MINIMUM[length], DANTAGGEN_MAXIMUM.get(length)


class DanTagGenFamily(Family):
    name = "dantaggen"
    formats = (DanTagGen("dantaggen", quality_line=False), DanTagGen("dantaggen-delta", quality_line=True))
    # The author's runner's defaults (REFERENCE.md).
    sampling = Sampling(temperature=1.35, top_p=0.95, top_k=100, min_p=0.0, max_new_tokens=512, repeat_penalty=1.0)
    max_retries = 3  # the author's runner continues a result shorter than its length target

    def reads(self, metadata: dict[str, Any]) -> bool:
        return metadata.get("tokenizer.ggml.model") == "llama"

    def tokenizer(self, model) -> TextTokenizer:
        return TextTokenizer(model)

    def guess_format(self, hints: str, path_name: str) -> str:
        if "delta" in hints:
            return "dantaggen-delta"
        if any(v in hints for v in ("alpha", "beta", "gamma")):
            return "dantaggen"
        log.warning(f"{path_name}: cannot tell which DanTagGen version this is; using the delta prompt (--prompt-format to choose)")
        return "dantaggen-delta"


FAMILY = DanTagGenFamily()
