"""The prompt formats, one small object each, registered by name (REFERENCE.md, sections 1 and 2).

A format turns a `Request` and its cleaned general tags into the exact text the model was trained on,
and says which conditions it accepts, which tokens end generation, and what tag counts a length means.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtg_cli.settings import DEFAULT_ASPECT_RATIO, DEFAULT_IDENTITY, DEFAULT_LENGTH, DEFAULT_RATING, Request
from dtg_cli.tags import is_special

# Condition name -> the flag that sets it, for messages.
FLAGS = {
    "copyright": "--copyright",
    "character": "--character",
    "artist": "--artist",
    "quality": "--quality",
    "rating": "--rating",
    "aspect_ratio": "--aspect-ratio",
    "length": "--length",
    "identity": "--identity",
}


class Control(str):
    """A control token that a prompt format writes, such as `<|bos|>` or `<|input_end|>`."""


class Prompt(str):
    """A prompt's text that remembers which of its pieces are the format's control tokens.

    Only those become control tokens. Everything else, the user's tags and conditions included, is
    tokenized as text, so that a tag such as `<|rating:explicit|>` or `</s>` can never act as one.
    `parts` holds (text, is_control) with adjacent text joined, the way a tokenizer that splits on control
    tokens first would see it.
    """

    parts: tuple[tuple[str, bool], ...]

    def __new__(cls, *pieces: str) -> Prompt:
        parts: list[tuple[str, bool]] = []
        for piece in pieces:
            control = isinstance(piece, Control)
            if not piece:
                continue
            if parts and not control and not parts[-1][1]:
                parts[-1] = (parts[-1][0] + piece, False)
            else:
                parts.append((str(piece), control))
        prompt = super().__new__(cls, "".join(text for text, _ in parts))
        prompt.parts = tuple(parts)
        return prompt


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
class DartV2:
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

    def build(self, request: Request, general: list[str]) -> Prompt:
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
class DanTagGen:
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

    def build(self, request: Request, general: list[str]) -> Prompt:
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


FORMATS = {
    f.name: f
    for f in (
        DartV2("dart-v2-sft", sft=True),
        DartV2("dart-v2-base", sft=False),
        DanTagGen("dantaggen", quality_line=False),
        DanTagGen("dantaggen-delta", quality_line=True),
    )
}
