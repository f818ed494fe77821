"""The tokenizers the engine uses: a prompt to token ids, and generated ids back to tags.

Two kinds exist: `TagTokenizer`, a one-token-per-tag vocabulary that dtg tokenizes itself (Dart v2's
tokenizer.json, through `dtg_cli.wordlevel.WordLevelTokenizer`), and `TextTokenizer`, a vocabulary that
llama.cpp tokenizes (SentencePiece: DanTagGen). Both keep a prompt's control tokens apart (`Prompt`).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from dtg_cli.errors import ModelFileError
from dtg_cli.prompt import Prompt
from dtg_cli.wordlevel import WordLevelTokenizer


class Tokenizer:
    """A `Prompt` becomes ids with only its format's control tokens as control tokens; every other piece of
    it is tokenized as text (`_text_ids`)."""

    vocabulary: frozenset[str] | None = None  # every tag, for a one-token-per-tag vocabulary
    tag_of: dict[int, str] | None = None  # id -> tag, for a one-token-per-tag vocabulary

    def __init__(self):
        self._control_ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        """Ids of a `Prompt`, or of any text with its special tokens read as such."""
        if not isinstance(text, Prompt):
            return self._special_text_ids(text)
        ids = self._start_ids()
        for part, control in text.parts:
            ids += [self.control_id(part)] if control else self._text_ids(part)
        return ids

    def control_id(self, text: str) -> int:
        """The id of a control token such as `<|input_end|>`, which the model's vocabulary must have."""
        if text not in self._control_ids:
            idx = self.token_id(text)
            if idx is None:
                raise ModelFileError(f"the model's vocabulary has no {text} token, which its prompt format needs (--prompt-format)")
            self._control_ids[text] = idx
        return self._control_ids[text]

    def token_id(self, text: str) -> int | None:
        raise NotImplementedError

    def tag_decoder(self) -> Callable[[int | None], list[str]]:
        """A function to feed generated ids to; it returns the tags that are complete. Feed None at the end."""
        raise NotImplementedError

    def text(self, ids: list[int]) -> str:
        """The text of generated ids, as the model wrote it."""
        raise NotImplementedError

    def _start_ids(self) -> list[int]:
        return []

    def _text_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def _special_text_ids(self, text: str) -> list[int]:
        raise NotImplementedError


class TagTokenizer(Tokenizer):
    """A one-token-per-tag vocabulary (Dart v2), read from the tokenizer.json a GGUF carries."""

    def __init__(self, json_text: str, n_vocab: int | None = None):
        """`n_vocab`: the model's vocabulary size, which every id of the file must be below (an id past it
        would index past the logits, or reach llama.cpp as a token it does not have)."""
        super().__init__()
        self.inner = WordLevelTokenizer.from_json(json_text)
        if n_vocab is not None:
            bad = next((i for i in self.inner.id_to_token if not 0 <= i < n_vocab), None)
            if bad is not None:
                raise ModelFileError(f"the embedded tokenizer.json has token id {bad}; the model has {n_vocab} tokens")
        special = self.inner.special_ids
        self.tag_of = {i: t for i, t in self.inner.id_to_token.items() if i not in special}
        self.vocabulary = frozenset(self.tag_of.values())

    def _text_ids(self, text: str) -> list[int]:
        # A piece that spells a special token is an unknown tag (<|unk|>).
        return self.inner.encode(text, parse_special=False)

    def _special_text_ids(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def token_id(self, text: str) -> int | None:
        return self.inner.token_to_id.get(text)

    def text(self, ids: list[int]) -> str:
        return ", ".join(self.tag_of[i] for i in ids if i in self.tag_of)

    def tag_decoder(self) -> Callable[[int | None], list[str]]:
        def feed(token: int | None) -> list[str]:
            tag = self.tag_of.get(token) if token is not None else None
            return [tag] if tag is not None else []

        return feed


class TextTokenizer(Tokenizer):
    """A vocabulary llama.cpp tokenizes (SentencePiece); the model writes comma-separated text."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    # Each run of a prompt's text is tokenized on its own. llama.cpp's tokenization of the whole prompt
    # string does the same between control tokens (a "▁" starts the text after each), so a prompt whose user
    # text spells no control token gets exactly the ids of the whole string, as the author's runtime sends it.
    def _start_ids(self) -> list[int]:
        return self.model.tokenize("", add_special=True, parse_special=False)  # BOS

    def _text_ids(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=False, parse_special=False)

    def _special_text_ids(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=True)

    def token_id(self, text: str) -> int | None:
        ids = self.model.tokenize(text, add_special=False, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def text(self, ids: list[int]) -> str:
        return b"".join(self.model.piece(i) for i in ids).decode("utf-8", "replace")

    def tag_decoder(self) -> Callable[[int | None], list[str]]:
        """Feed ids; get back each tag once the comma after it arrives. Feed None at the end for the rest."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = [""]

        def feed(token: int | None) -> list[str]:
            if token is None:
                text, pending[0] = pending[0] + decoder.decode(b"", final=True), ""
                return [" ".join(t.split()) for t in text.split(",") if t.strip()]
            pending[0] += decoder.decode(self.model.piece(token))
            *done, pending[0] = pending[0].split(",")
            return [" ".join(t.split()) for t in done if t.strip()]

        return feed
