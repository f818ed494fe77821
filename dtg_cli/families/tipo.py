"""TIPO (KBlueLeaf): LLaMA models with llama-2's SentencePiece vocabulary and 13 task tokens, trained to
extend tags, write a caption from tags, tags from a caption, and a long caption from a short one
(TIPO.md). The prompt is the training format (TIPO.md section 2.1, `generate_prompt_dan`): one
`key: value` line per field the user gave, the target line, then the task's content lines.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

from dtg_cli.family import Family, Step
from dtg_cli.prompt import Control, Prompt
from dtg_cli.settings import Request, Sampling
from dtg_cli.tagtext import is_special
from dtg_cli.tokenizers import TextTokenizer

# dtg's lengths as TIPO's length tokens: medium asks for long and is capped, as for DanTagGen.
TARGETS = {"very_short": "very_short", "short": "short", "medium": "long", "long": "long", "very_long": "very_long"}
# Tags in a result (input included): KGen metainfo TARGET_TIPO (minimum) and TARGET_TIPO_MAX (maximum).
TAG_MINIMUM = {"very_short": 6, "short": 18, "medium": 18, "long": 36, "very_long": 54}
TAG_MAXIMUM = {"very_short": 18, "short": 36, "medium": 29, "long": 54, "very_long": 72}
# Caption sentences: KGen metainfo TARGET_TIPO_NL (minimum) and TARGET_TIPO_NL_MAX (maximum; none for very_long).
NL_MINIMUM = {"very_short": 1, "short": 2, "medium": 4, "long": 4, "very_long": 8}
NL_MAXIMUM = {"very_short": 2, "short": 4, "medium": 8, "long": 8, "very_long": None}
DEFAULT_LENGTH = "long"

# Which model calls make what was asked from what was given (TIPO.md 2.4, tags first; only trained tasks):
# (write, given) -> steps. A step is (task token or None, the field it writes, whether it continues the
# prompt's last field (True) or writes that field fresh).
PLANS: dict[tuple[str, str], tuple[Step, ...]] = {
    ("tags", "nothing"): (Step(None, "tag", True),),
    ("tags", "tags"): (Step(None, "tag", True),),
    ("tags", "nl"): (Step("long_to_tag", "tag", True),),
    ("tags", "both"): (Step("short_to_tag", "tag", True),),
    ("nl", "nothing"): (Step(None, "tag", True), Step("tag_to_long", "long", False)),
    ("nl", "tags"): (Step("tag_to_long", "long", False),),
    ("nl", "nl"): (Step("short_to_long", "long", False),),
    ("nl", "both"): (Step("tag_to_long", "long", True),),
    ("both", "nothing"): (Step(None, "tag", True), Step("tag_to_long", "long", False)),
    ("both", "tags"): (Step(None, "tag", True), Step("tag_to_long", "long", False)),
    ("both", "nl"): (Step("long_to_tag", "tag", True), Step("short_to_tag_to_long", "long", False)),
    ("both", "both"): (Step("short_to_tag", "tag", True), Step("tag_to_long", "long", True)),
}

_KEY_LINE = re.compile(r"^([^:\n]+):")


def one_line(text: str) -> str:
    """User text as one line: newlines would start new `key:` lines of the prompt."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Tipo:
    """TIPO's training-format prompt."""

    name: str = "tipo"
    family: str = "tipo"
    stop: tuple[str, ...] = ("</s>",)

    @property
    def accepts(self) -> frozenset[str]:
        return frozenset({"meta", "copyright", "character", "artist", "quality", "rating", "aspect_ratio", "length", "nl", "write"})

    def steps(self, request: Request) -> tuple[Step, ...]:
        given = {(False, False): "nothing", (True, False): "tags", (False, True): "nl", (True, True): "both"}
        return PLANS[(request.write or "tags", given[(bool(request.tags), request.nl is not None)])]

    def build(
        self, request: Request, general: list[str], step: Step | None = None, nl: str | None = None, written: str | None = None
    ) -> Prompt:
        step = step or self.steps(request)[0]
        nl = request.nl if nl is None else nl
        lines = []
        for key, values in (
            ("meta", request.meta),
            ("rating", (request.rating,) if request.rating else ()),
            ("artist", request.artist),
            ("characters", request.character),
            ("copyrights", request.copyright),
            ("quality", request.quality),
        ):
            if values:
                lines.append(f"{key}: {', '.join(values)}\n")
        if request.aspect_ratio is not None:
            lines.append(f"aspect ratio: {request.aspect_ratio:.1f}\n")
        pieces: list[str] = ["".join(lines), "target: "]
        if step.task != "short_to_long":  # trained without a length token (TIPO.md 2.2)
            pieces.append(Control(f"<|{TARGETS[request.length or DEFAULT_LENGTH]}|>"))
        if step.task is not None:
            pieces += [" " if step.task != "short_to_long" else "", Control(f"<|{step.task}|>")]
        tags = [t for t in general if is_special(t)] + [t for t in general if not is_special(t)]
        fields = step.task.split("_to_") if step.task else ["tag"]
        caption = one_line(nl or "")  # a task that reads a short caption has it in `short:`, else in `long:`
        content = {"tag": ", ".join(tags), "short": caption if "short" in fields else "", "long": "" if "short" in fields else caption}
        if written is not None:  # continuing the caption this step writes (a retry)
            content[step.writes] = one_line(written)
        body = ""
        for i, key in enumerate(fields):
            if content[key]:
                body += f"{key}: {content[key]}\n"
            elif i < len(fields) - 1:
                body += f"{key}: \n"
        if step.expand:
            body = body.rstrip()  # the model continues the last field
            if not content[step.writes] and step.task != "long_to_tag":  # long_to_tag may first extend the caption
                body += ("\n" if body else "") + f"{step.writes}:"
        else:
            body += f"{fields[-1]}:"  # the model writes this field fresh
        return Prompt(*pieces, "\n", body)

    def conditions(self, request: Request) -> dict:
        """The conditions the prompt states: only those given (a default is not stated), and the length."""
        values: dict[str, Any] = {}
        for name in ("meta", "rating", "artist", "character", "copyright", "quality"):
            value = getattr(request, name)
            if value:
                values[name] = list(value) if isinstance(value, tuple) else value
        if request.aspect_ratio is not None:
            values["aspect_ratio"] = round(request.aspect_ratio, 1)
        values["length"] = request.length or DEFAULT_LENGTH
        values["write"] = request.write or "tags"
        return values

    def tag_count_range(self, length: str | None) -> tuple[int, int | None]:
        length = length or DEFAULT_LENGTH
        return TAG_MINIMUM[length], TAG_MAXIMUM[length]

    def sentence_range(self, length: str | None) -> tuple[int, int | None]:
        length = length or DEFAULT_LENGTH
        return NL_MINIMUM[length], NL_MAXIMUM[length]


class TipoDecoder:
    """Reads what TIPO writes after a prompt: the field the prompt ends in, then `key: value` lines (a value
    may run over several lines). Tags of a `tag:` field come back as each comma arrives; caption text is
    kept in `nl` as written, a newline as a space (strip it to use it). `done` once the field the step
    writes has ended (its line, for tags; a next `key:` line, for a caption)."""

    def __init__(self, tokenizer: TextTokenizer, step: Step, prompt: str):
        self.piece = tokenizer.model.piece
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.writes = step.writes
        key = _KEY_LINE.match(prompt.rsplit("\n", 1)[-1])
        self.field: str | None = key[1].strip() if key and key[1].strip() != "target" else None  # what the prompt ends in
        self.line = ""  # the current line's text not yet used (tags, or a line whose key is not known yet)
        self.nl = ""  # caption text written in this step
        self._shown = ""  # caption text of the field the step writes, not yet taken by `take_nl`
        self.seen_target = self.field == self.writes
        self.done = False

    def __call__(self, token: int | None) -> list[str]:
        text = self.utf8.decode(b"" if token is None else self.piece(token), final=token is None)
        tags: list[str] = []
        for char in text:
            if self.done:
                break
            if char == "\n":
                tags += self._end_line()
            elif self.field in ("short", "long"):
                self._caption(char)
            else:
                self.line += char
                if self.field is None:
                    key = _KEY_LINE.match(self.line)
                    if key and self.seen_target:
                        self.done = True  # a next field starts: the one asked for is written
                    elif key:
                        self.field, self.line = key[1].strip(), ""
                        self.seen_target = self.field == self.writes
                elif self.field == "tag" and char == ",":
                    tags += self._tags(self.line[:-1])
                    self.line = ""
        if token is None and not self.done:
            tags += self._end_line(last=True)
        return tags

    def take_nl(self) -> str:
        text, self._shown = self._shown, ""
        return text

    def _caption(self, text: str) -> None:
        self.nl += text
        if self.field == self.writes or self.field is None:
            self._shown += text

    def _end_line(self, last: bool = False) -> list[str]:
        tags: list[str] = []
        if self.field == "tag":
            tags = self._tags(self.line)
            if self.writes == "tag":
                self.done = True
        elif self.field in ("short", "long"):
            if not last:
                self._caption(" ")  # a caption that runs over lines is one line
        elif self.line.strip() and self.seen_target and self.writes != "tag":
            self._caption(self.line + ("" if last else " "))  # a line of the caption without a key of its own
        self.field, self.line = None, ""
        return tags

    @staticmethod
    def _tags(text: str) -> list[str]:
        return [" ".join(t.split()) for t in text.split(",") if t.strip() and t.strip() != "<|empty|>"]


class TipoFamily(Family):
    name = "tipo"
    formats = (Tipo(),)
    # KGen generate_with_retry's defaults, and generate()'s repetition penalty (TIPO.md 2.6).
    sampling = Sampling(temperature=0.35, top_p=0.95, top_k=60, min_p=0.1, max_new_tokens=512, repeat_penalty=1.17)
    max_retries = 10  # KGen generate_with_retry's max_retry (TIPO.md 5)

    def reads(self, metadata: dict[str, Any]) -> bool:
        tokens = metadata.get("tokenizer.ggml.tokens")
        return metadata.get("tokenizer.ggml.model") == "llama" and tokens is not None and "<|tag_to_long|>" in tokens

    def tokenizer(self, model) -> TextTokenizer:
        return TextTokenizer(model)

    def decoder(self, tokenizer, step: Step, prompt: str) -> TipoDecoder:
        return TipoDecoder(tokenizer, step, prompt)


FAMILY = TipoFamily()
