"""What a model family is to dtg: the interface every family module implements.

A family (Dart v2, DanTagGen, ...) says how it is recognised in a GGUF, which tokenizer reads it, its
prompt formats (the conditions each accepts, the prompt text and its control tokens, the stop tokens,
the tag counts a length means), how short results are continued, and its sampling defaults. The engine,
the store, batch and the CLI ask the family; none of them tests which family it is.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dtg_cli.prompt import Prompt

if TYPE_CHECKING:
    from dtg_cli.settings import Request, Sampling
    from dtg_cli.tokenizers import Tokenizer


@dataclass(frozen=True)
class Step:
    """One model call of a result: the task token (None: extend the tags), the field it writes (`tag`, or
    `long` for a caption), and whether the prompt ends inside that field for the model to continue (True)
    or ends with the field's key for the model to write it fresh."""

    task: str | None
    writes: str
    expand: bool


ONE_STEP = (Step(None, "tag", True),)  # what a family without tasks does: extend the tags

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """A caption's sentences (split after . ! or ?)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


class StepDecoder(Protocol):
    """Fed each generated id of a step (None at its end); returns the tags that are complete. `done` says
    the step has written what it was for; `nl` holds the caption text the step wrote."""

    done: bool
    nl: str

    def __call__(self, token: int | None) -> list[str]: ...

    def take_nl(self) -> str:
        """The caption text written since the last call (newlines as spaces), to show it as it comes."""
        ...


class _TagStepDecoder:
    """A `StepDecoder` over a tokenizer's tag decoder: no caption, done when the model stops."""

    done = False
    nl = ""

    def __init__(self, feed):
        self.feed = feed

    def __call__(self, token: int | None) -> list[str]:
        return self.feed(token)

    def take_nl(self) -> str:
        return ""


class TagsOnly:
    """What a `PromptFormat` without tasks or captions inherits: one step, extending the tags."""

    def steps(self, request: Request) -> tuple[Step, ...]:
        return ONE_STEP

    def sentence_range(self, length: str | None) -> tuple[int, int | None]:
        return 0, None  # writes no caption


class PromptFormat(Protocol):
    """One prompt layout of a family, registered by name (`--prompt-format`)."""

    name: str
    family: str
    stop: tuple[str, ...]  # control tokens that end a result

    @property
    def accepts(self) -> frozenset[str]:
        """The conditions (Request fields) this format has a place for."""
        ...

    def steps(self, request: Request) -> tuple[Step, ...]:
        """The model calls a request takes, in order (`ONE_STEP` for a family without tasks, `TagsOnly`)."""
        ...

    def build(
        self, request: Request, general: list[str], step: Step | None = None, nl: str | None = None, written: str | None = None
    ) -> Prompt:
        """The exact model input for `request` with these general tags (also used to continue a result), for
        one of its `steps` (default: the first), with the caption it reads (`nl`, default: the request's) and
        the caption it is writing, to continue it (`written`)."""
        ...

    def conditions(self, request: Request) -> dict:
        """The conditions as the prompt states them, defaults included."""
        ...

    def tag_count_range(self, length: str | None) -> tuple[int, int | None]:
        """(minimum, maximum) general tags in a result, input included; below the minimum a result is
        continued (up to the family's `max_retries`), at the maximum it stops."""
        ...

    def sentence_range(self, length: str | None) -> tuple[int, int | None]:
        """(minimum, maximum) sentences of a caption the model writes ((0, None) for a family without)."""
        ...


class Family(ABC):
    """A model family: one module under `dtg_cli/families/`, listed in `dtg_cli.families.FAMILIES`."""

    name: str
    formats: tuple[PromptFormat, ...]
    sampling: Sampling  # the family's defaults for every sampling setting
    max_retries: int = 0  # continuations of a result that stops below its length's minimum
    reads_any_text: bool = True  # False for a one-token-per-tag vocabulary (`tag_vocabulary`)

    @abstractmethod
    def reads(self, metadata: dict[str, Any]) -> bool:
        """Whether a GGUF with this metadata (`dtg_cli.gguf_header.read_metadata`) is of this family."""

    @abstractmethod
    def tokenizer(self, model) -> Tokenizer:
        """The tokenizer for a loaded model (`dtg_cli.llama.Model`) of this family."""

    def tag_vocabulary(self, metadata: dict[str, Any]) -> frozenset[str] | None:
        """Every tag the model can read, for a one-token-per-tag vocabulary; None when it reads any text.
        A family that overrides this sets `reads_any_text` to False."""
        return None

    def decoder(self, tokenizer: Tokenizer, step: Step, prompt: str) -> StepDecoder:
        """What reads the ids a step generates after `prompt`. The default reads tags until the model stops."""
        return _TagStepDecoder(tokenizer.tag_decoder())

    def guess_format(self, hints: str, path_name: str) -> str:
        """The prompt format of a GGUF the registry does not know, from what it records of its source
        (`hints`, lower case). The default is the family's first format."""
        return self.formats[0].name
