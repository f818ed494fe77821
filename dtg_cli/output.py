"""What dtg writes for a result: one record (the same keys whichever command wrote it) and one writer for
text lines, a JSON array and JSON lines. docs/generate.md ("Result records") documents the keys."""

from __future__ import annotations

import json
import re
import sys
from typing import IO, Any

from dtg_cli.errors import DtgError, UsageError
from dtg_cli.outcomes import Result
from dtg_cli.rendering import Style
from dtg_cli.tagtext import printable

_C1 = re.compile("[\x7f-\x9f]")  # json.dumps escapes the C0 controls itself


def json_text(value: Any, **options: Any) -> str:
    """JSON as dtg writes it (UTF-8 text, not ASCII escapes), with every control character escaped, so
    that no string from a model file reaches a terminal as a control sequence."""
    return _C1.sub(lambda m: f"\\u{ord(m[0]):04x}", json.dumps(value, ensure_ascii=False, **options))


KINDS = ("text", "json", "jsonl")  # what dtg generate writes
LINE_KINDS = ("text", "jsonl")  # one result a line: what dtg batch and dtg merge write


def result_record(result: Result, style: Style = Style(), place: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result as dtg writes it in JSON. `place` says where it comes from in a batch input (id, record, line,
    variant) and comes first; the other keys are the same for every command."""
    written = result.written(style)
    return {
        **(place or {}),
        "seed": result.seed,
        "model": result.model,
        "conditions": result.conditions,  # as the prompt states them, defaults included
        "sampling": result.sampling,
        "input_tags": written["input_tags"],
        "new_tags": written["new_tags"],
        "tags": written["tags"],
        "text": written["text"],  # the line the text format writes
        "nl": result.nl,
        "stop": result.stop,
        "prompt": result.prompt,  # the exact model input
        "input_ids": result.input_ids,
        "output_ids": result.output_ids,
        "continuations": result.continuations,
        "steps": result.steps,
    }


def check_kind(kind: str, allowed: tuple[str, ...] = KINDS) -> str:
    if kind not in allowed:
        raise UsageError(f"--format: {kind!r} is not one of {', '.join(allowed)}")
    return kind


class ResultWriter:
    """Results, each written and flushed as soon as it is given: text lines, a JSON array (closed by
    `close`, also after an interruption) or JSON lines. Writes to a binary file, or to stdout."""

    def __init__(self, kind: str, style: Style = Style(), file: IO[bytes] | None = None, name: str = "stdout"):
        self.kind = check_kind(kind)
        self.style = style
        self.file = file
        self.name = name
        self.count = 0

    def write(self, result: Result, place: dict[str, Any] | None = None) -> None:
        if self.kind == "text":
            text = printable(result.written(self.style)["text"]) + "\n"  # one line, whatever a vocabulary holds
        elif self.kind == "jsonl":
            text = json_text(result_record(result, self.style, place)) + "\n"
        else:
            text = ("," if self.count else "[") + "\n" + json_text(result_record(result, self.style, place), indent=2)
        self.count += 1  # first: a Ctrl-C or SIGTERM right after the write must find it counted, to close the array
        self._put(text)

    def close(self, failed: bool = False) -> None:
        """End a JSON array: `[]` when nothing was written, nothing at all for a run that failed at once."""
        if self.kind == "json" and (self.count or not failed):
            self._put("\n]\n" if self.count else "[]\n")

    def _put(self, text: str) -> None:
        if self.file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            self.file.write(text.encode("utf-8"))
            self.file.flush()
        except OSError as e:
            raise DtgError(f"-o {self.name}: cannot write the results ({e.strerror})") from None
