"""What goes into the engine and what comes out: `Task`, `Result`, `Outcome`, and the `Stream` of tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dtg_cli.errors import DtgError
from dtg_cli.reading import Layout
from dtg_cli.rendering import Style, render
from dtg_cli.settings import Request


@dataclass
class Task:
    """One prompt for `Generator.run`: a request and, if the caller chooses them, the seed of each of its
    `num` results (by default the request's seed, or a random one, then +1 per result)."""

    request: Request
    seeds: tuple[int, ...] | None = None
    key: Any = None  # the caller's, handed back untouched


@dataclass
class Result:
    """One generated tag list and how it was made."""

    model: str
    prompt: str  # the exact model input text
    input_ids: list[int]
    output_ids: list[int]
    tags: list[str]  # every tag of the result: the flags' tags, the user's tags as written, the new ones
    new_tags: list[str]
    input_tags: list[str]
    seed: int
    stop: str  # "eos", "max_new_tokens", "length" (a length cap) or "context" (the context is full)
    sampling: dict
    timings: dict
    continuations: list[dict] = field(default_factory=list)  # retries below a length's minimum: prompt and ids each
    conditions: dict = field(default_factory=dict)  # the conditions the prompt was built with, defaults included
    layout: Layout | None = field(default=None, repr=False)  # what the user wrote, for `dtg_cli.rendering.render`
    nl: str | None = None  # the caption: written by the model (TIPO --write nl|both) or given (--nl)
    steps: list[dict] = field(default_factory=list)  # every model call: task, prompt, input_ids, output_ids, text

    def written(self, style: Style = Style()) -> dict:
        """The result as dtg writes it in `style`: the line (`text`, in the user's syntax) and tag lists."""
        text, tags = render(self.layout, self.new_tags, style, self.nl)  # the caption joins the line
        return {
            "text": text,
            "tags": tags,
            "new_tags": [style.tag(t, self.layout) for t in self.new_tags],
            "input_tags": [style.tag(t, self.layout) for t in self.input_tags],
        }


@dataclass
class Outcome:
    """What `Generator.run` hands back, in input order: one result of a task, a task that could not run
    (`error`), or an input item that is not a task, passed through untouched (`result` and `error` None)."""

    item: Any
    variant: int = 0
    result: Result | None = None
    error: DtgError | None = None


class Stream:
    """Receives results as they are generated. `unit` is (input position, variant): units start in input
    order, but with several sequences decoded together their tags arrive interleaved."""

    def start(self, unit: tuple[int, int], layout: Layout) -> None: ...

    def tag(self, unit: tuple[int, int], tag: str) -> None: ...

    def nl(self, unit: tuple[int, int], text: str) -> None:
        """More of the caption a result is writing (TIPO), as it arrives."""
