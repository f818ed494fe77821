"""Tokenizer vocabularies read from a checkpoint directory, in the form the GGUF writer needs.

Two kinds exist in the models dtg runs:
- SentencePiece (DanTagGen: the llama-2 model plus added special tokens), which llama.cpp tokenizes itself;
- word-level `tokenizers` JSON (Dart v2: one token per tag), which llama.cpp cannot tokenize. Its whole
  tokenizer.json travels inside the GGUF and dtg tokenizes it in Python (`dtg_cli.tokenizer`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dtg_cli.errors import CheckpointError

# SentencePiece piece types, which llama.cpp's token types reuse.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class SentencePieceVocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    add_dummy_prefix: bool
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = True
    add_eos: bool = False


@dataclass
class WordLevelVocab:
    tokenizer_json: str
    size: int
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad -> id


# --- a minimal protobuf reader for sentencepiece's ModelProto ---------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) for one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield number, wire, value


def read_sentencepiece_model(path: Path) -> tuple[list[tuple[str, float, int]], bool]:
    """Return the pieces (text, score, type) of a sentencepiece .model file and its add_dummy_prefix flag."""
    pieces: list[tuple[str, float, int]] = []
    add_dummy_prefix = True  # the proto's default
    try:
        for number, wire, value in _fields(path.read_bytes()):
            if number == 1 and wire == 2:  # ModelProto.pieces
                text, score, kind = "", 0.0, NORMAL
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        text = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        (score,) = struct.unpack("<f", v)
                    elif n == 3 and w == 0:
                        kind = v
                pieces.append((text, score, kind))
            elif number == 3 and wire == 2:  # ModelProto.normalizer_spec
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        add_dummy_prefix = bool(v)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid sentencepiece model ({e}); download it again") from e
    if not pieces:
        raise CheckpointError(f"{path}: not a valid sentencepiece model (no pieces); download it again")
    return pieces, add_dummy_prefix


# --- reading a checkpoint's tokenizer files -------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the tokenizer file ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not valid UTF-8 ({e}); download it again") from e


def _read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); download it again") from e


def _added_tokens(directory: Path) -> dict[int, tuple[str, bool]]:
    """Added tokens by id, with whether each is special, from whichever HF files the checkpoint has."""
    added: dict[int, tuple[str, bool]] = {}
    path = directory / "added_tokens.json"
    if path.is_file():
        for content, idx in _read_json(path).items():
            added[int(idx)] = (content, True)
    path = directory / "tokenizer.json"
    if path.is_file():
        for tok in _read_json(path).get("added_tokens") or []:
            added[int(tok["id"])] = (tok["content"], bool(tok.get("special", False)))
    path = directory / "tokenizer_config.json"
    if path.is_file():
        for idx, tok in (_read_json(path).get("added_tokens_decoder") or {}).items():
            added[int(idx)] = (tok["content"], bool(tok.get("special", False)))
    return added


def _special_token_names(directory: Path) -> dict[str, str]:
    """bos/eos/unk/pad token texts from special_tokens_map.json and tokenizer_config.json."""
    names: dict[str, str] = {}
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / filename
        if not path.is_file():
            continue
        data = _read_json(path)
        for kind in ("bos", "eos", "unk", "pad"):
            value = data.get(f"{kind}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and kind not in names:
                names[kind] = value
    return names


def load_sentencepiece_vocab(directory: Path, vocab_size: int) -> SentencePieceVocab:
    pieces, add_dummy_prefix = read_sentencepiece_model(directory / "tokenizer.model")
    tokens = [p[0] for p in pieces]
    scores = [p[1] for p in pieces]
    types = [p[2] for p in pieces]
    for idx, (content, special) in sorted(_added_tokens(directory).items()):
        if idx < len(tokens):
            continue  # the base model's own control tokens (<s>, </s>, <unk>) are listed again
        if idx != len(tokens):
            raise CheckpointError(f"{directory}: added token {content!r} has id {idx}, leaving a gap after {len(tokens) - 1}")
        tokens.append(content)
        scores.append(-1000.0)
        types.append(CONTROL if special else USER_DEFINED)
    if len(tokens) > vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {len(tokens)} tokens but config.json says vocab_size {vocab_size}"
        )
    while len(tokens) < vocab_size:  # embedding rows beyond the tokenizer
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(UNUSED)

    vocab = SentencePieceVocab(tokens, scores, types, add_dummy_prefix)
    index = {t: i for i, t in enumerate(tokens)}
    names = _special_token_names(directory)
    defaults = {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}
    for kind in ("bos", "eos", "unk", "pad"):
        text = names.get(kind, defaults.get(kind))
        if text in index:
            setattr(vocab, f"{kind}_id", index[text])
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = _read_json(config_path)
        vocab.add_bos = bool(config.get("add_bos_token", True))
        vocab.add_eos = bool(config.get("add_eos_token", False))
    return vocab


def load_wordlevel_vocab(path: Path, vocab_size: int) -> WordLevelVocab:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); download it again") from e
    model = data.get("model") or {}
    if model.get("type") != "WordLevel" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{path}: expected a WordLevel tokenizer, found {model.get('type')!r}")
    ids = set(model["vocab"].values()) | {int(t["id"]) for t in data.get("added_tokens") or []}
    size = max(ids) + 1
    if size > vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {size} tokens but config.json says vocab_size {vocab_size}")
    by_text = {**model["vocab"], **{t["content"]: int(t["id"]) for t in data.get("added_tokens") or []}}
    special_ids = {}
    for kind, candidates in {
        "bos": ("<|bos|>", "<s>"),
        "eos": ("<|eos|>", "</s>"),
        "unk": (model.get("unk_token"), "<|unk|>"),
        "pad": ("<|pad|>",),
    }.items():
        for candidate in candidates:
            if candidate in by_text:
                special_ids[kind] = by_text[candidate]
                break
    return WordLevelVocab(text, vocab_size, special_ids)


def load_vocab(directory: Path, vocab_size: int) -> SentencePieceVocab | WordLevelVocab:
    """The checkpoint's vocabulary: sentencepiece when tokenizer.model exists, else a word-level tokenizer.json."""
    directory = Path(directory)
    if (directory / "tokenizer.model").is_file():
        return load_sentencepiece_vocab(directory, vocab_size)
    if (directory / "tokenizer.json").is_file():
        return load_wordlevel_vocab(directory / "tokenizer.json", vocab_size)
    raise CheckpointError(
        f"{directory}: no tokenizer (tokenizer.model or tokenizer.json); download the checkpoint's tokenizer files too"
    )
