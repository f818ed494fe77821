"""The Dart v2 word-level tokenizer, run from the tokenizer.json that a dtg GGUF carries.

llama.cpp cannot tokenize a word-level vocabulary, so a Dart GGUF declares `tokenizer.ggml.model = none`
and stores the Hugging Face tokenizer.json under `tokenizer.huggingface.json`. This module implements the
subset of the `tokenizers` pipeline those files use (added-token split, normalizer, Split pre-tokenizer,
WordLevel model, template post-processor) and refuses anything else rather than guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from dtg_cli import jsontext
from dtg_cli.errors import ModelFileError
from dtg_cli.gguf_header import read_metadata
from dtg_cli.linear_regex import compile_linear

HF_JSON_KEY = "tokenizer.huggingface.json"

# Oniguruma's \s (what `tokenizers` regexes use) is Unicode White_Space; Python's \s also matches the
# information separators U+001C..U+001F, which would split tags that the reference tokenizer keeps whole.
_WHITESPACE = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


# The same set in RE2's syntax, for a Split pattern (`_split_regex`).
_RE2_WHITESPACE = "\\t\\n\\x0b\\x0c\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
_RE2_ESCAPES = {"\\s": f"[{_RE2_WHITESPACE}]", "\\S": f"[^{_RE2_WHITESPACE}]"}


def _split_regex(pattern: str):
    """A Split pattern of tokenizer.json (Oniguruma syntax) compiled by RE2: the file comes from anywhere,
    and its pattern is matched against every prompt, so it must match in linear time whatever it is."""
    try:
        return compile_linear(re.sub(r"\\[sS]", lambda m: _RE2_ESCAPES[m[0]], pattern))
    except ValueError as e:
        raise ModelFileError(f"the embedded tokenizer.json has a Split pattern dtg cannot match ({e})") from None


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool
    normalized: bool
    lstrip: bool
    rstrip: bool
    single_word: bool


class WordLevelTokenizer:
    """Encode text to ids and ids to token strings exactly as the Hugging Face tokenizer does."""

    def __init__(self, spec: dict):
        model = spec.get("model") or {}
        if model.get("type") != "WordLevel":
            raise ModelFileError(f"expected a WordLevel tokenizer, found {model.get('type')!r}")
        self.vocab: dict[str, int] = dict(model["vocab"])
        self.added = [
            AddedToken(
                int(t["id"]),
                t["content"],
                bool(t.get("special", False)),
                bool(t.get("normalized", not t.get("special", False))),
                bool(t.get("lstrip", False)),
                bool(t.get("rstrip", False)),
                bool(t.get("single_word", False)),
            )
            for t in spec.get("added_tokens") or []
        ]
        self.id_to_token: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.id_to_token.update({t.id: t.content for t in self.added})
        self.token_to_id = {t: i for i, t in self.id_to_token.items()}
        self.special_ids = frozenset(t.id for t in self.added if t.special)
        unk = model.get("unk_token")
        self.unk_id = self.token_to_id.get(unk) if unk else None
        self._normalizers = self._build_normalizers(spec.get("normalizer"))
        self._splits = self._build_pre_tokenizer(spec.get("pre_tokenizer"))
        self._template = self._build_post_processor(spec.get("post_processor"))
        self._raw_matcher = self._matcher([t for t in self.added if not t.normalized])
        self._normalized_matcher = self._matcher([t for t in self.added if t.normalized])

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str) -> WordLevelTokenizer:
        try:
            return cls(jsontext.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFileError(f"the embedded tokenizer.json is invalid ({e})") from e

    @classmethod
    def from_gguf(cls, path: str | Path) -> WordLevelTokenizer:
        text = read_gguf_string(path, HF_JSON_KEY)
        if text is None:
            raise ModelFileError(f"{path}: no {HF_JSON_KEY} in this GGUF; convert the checkpoint again with dtg convert")
        return cls.from_json(text)

    def _build_normalizers(self, spec):
        if spec is None:
            return []
        kind = spec.get("type")
        if kind == "Sequence":
            return [n for sub in spec["normalizers"] for n in self._build_normalizers(sub)]
        if kind == "Lowercase":
            # char by char, like Rust's char::to_lowercase (no final-sigma context, unlike str.lower)
            return [lambda s: "".join(c.lower() for c in s)]
        if kind in ("NFC", "NFD", "NFKC", "NFKD"):
            return [lambda s, form=kind: unicodedata.normalize(form, s)]
        if kind == "Strip":
            left, right = spec.get("strip_left", True), spec.get("strip_right", True)
            ws = re.compile(f"^[{_WHITESPACE}]+" if left else "(?!)"), re.compile(f"[{_WHITESPACE}]+$" if right else "(?!)")
            return [lambda s: ws[1].sub("", ws[0].sub("", s))]
        raise ModelFileError(f"unsupported normalizer {kind!r} in the embedded tokenizer.json")

    def _build_pre_tokenizer(self, spec):
        if spec is None:
            return []
        kind = spec.get("type")
        if kind == "Sequence":
            return [s for sub in spec["pretokenizers"] for s in self._build_pre_tokenizer(sub)]
        if kind == "Split":
            pattern = spec["pattern"]
            regex = _split_regex(pattern["Regex"] if "Regex" in pattern else re.escape(pattern["String"]))
            behavior = spec.get("behavior", "Removed")
            if behavior not in ("Removed", "Isolated") or spec.get("invert"):
                raise ModelFileError(f"unsupported Split behaviour {behavior!r} in the embedded tokenizer.json")
            return [(regex, behavior == "Isolated")]
        raise ModelFileError(f"unsupported pre-tokenizer {kind!r} in the embedded tokenizer.json")

    def _build_post_processor(self, spec):
        if spec is None:
            return None
        if spec.get("type") != "TemplateProcessing":
            raise ModelFileError(f"unsupported post-processor {spec.get('type')!r} in the embedded tokenizer.json")
        template = []
        for item in spec["single"]:
            if "Sequence" in item:
                template.append(None)
            else:
                template.extend(spec["special_tokens"][item["SpecialToken"]["id"]]["ids"])
        return template

    @staticmethod
    def _matcher(tokens: list[AddedToken]):
        if not tokens:
            return None
        # Longest first: Python's alternation takes the first branch that matches, which then gives the
        # leftmost-longest match that `tokenizers` uses.
        ordered = sorted(tokens, key=lambda t: -len(t.content))
        by_content = {t.content: t for t in ordered}
        return re.compile("|".join(re.escape(t.content) for t in ordered)), by_content

    # --- encoding -------------------------------------------------------------------------------

    def _split_added(self, text: str, matcher) -> list[str | AddedToken]:
        """Cut `text` around added tokens, applying their lstrip/rstrip/single_word flags."""
        if matcher is None or not text:
            return [text] if text else []
        regex, by_content = matcher
        parts: list[str | AddedToken] = []
        pos = 0
        for m in regex.finditer(text):
            token = by_content[m[0]]
            start, end = m.start(), m.end()
            if token.single_word and ((start > 0 and _is_word_char(text[start - 1])) or (end < len(text) and _is_word_char(text[end]))):
                continue
            if start < pos:
                continue
            before = text[pos:start]
            if token.lstrip:
                before = before.rstrip(_WS_CHARS)
            if before:
                parts.append(before)
            parts.append(token)
            pos = end
            if token.rstrip:
                while pos < len(text) and text[pos] in _WS_CHARS:
                    pos += 1
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def _pre_tokenize(self, text: str) -> list[str]:
        pieces = [text]
        for regex, isolated in self._splits:
            out = []
            for piece in pieces:
                pos = 0
                for m in regex.finditer(piece):
                    out.append(piece[pos : m.start()])
                    if isolated:
                        out.append(m[0])
                    pos = m.end()
                out.append(piece[pos:])
            pieces = [p for p in out if p]
        return pieces

    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> list[int]:
        """The ids of `text`. With parse_special=False, text that spells a special token is not one: it is
        looked up like any other piece, and a piece whose id is a special token's becomes the unknown token."""
        ids: list[int] = []
        raw, normalized = (self._raw_matcher, self._normalized_matcher) if parse_special else (None, None)
        for part in self._split_added(text, raw):
            if isinstance(part, AddedToken):
                ids.append(part.id)
                continue
            for normalizer in self._normalizers:
                part = normalizer(part)
            for sub in self._split_added(part, normalized):
                if isinstance(sub, AddedToken):
                    ids.append(sub.id)
                    continue
                for piece in self._pre_tokenize(sub):
                    idx = self.vocab.get(piece, self.unk_id)
                    if idx is None:
                        raise ModelFileError(f"{piece!r} is not in the vocabulary and the tokenizer has no unknown token")
                    if not parse_special and idx in self.special_ids:
                        idx = self.unk_id
                    ids.append(idx)
        if add_special_tokens and self._template is not None:
            ids = [i for item in self._template for i in (ids if item is None else [item])]
        return ids

    # --- decoding -------------------------------------------------------------------------------

    def tokens(self, ids: list[int], skip_special_tokens: bool = False) -> list[str]:
        """The token string of each id (this tokenizer has no decoder: one id is one tag)."""
        return [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Tags joined with ", ", the way Dart's clients render a generation."""
        return ", ".join(self.tokens(ids, skip_special_tokens))


_WS_CHARS = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def read_gguf_string(path: str | Path, key: str) -> str | None:
    """One string value from a GGUF's metadata, or None when the key is absent."""

    value = read_metadata(path).get(key)
    return value if isinstance(value, str) else None
