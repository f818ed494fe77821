"""A prompt as a format builds it: its text, with the format's control tokens kept apart from user text."""

from __future__ import annotations


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
