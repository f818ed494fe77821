"""Tokenizer vocabularies read from a checkpoint directory, in the form the GGUF writer needs.

Two kinds exist in the models dtg runs:
- SentencePiece (DanTagGen: the llama-2 model plus added special tokens), which llama.cpp tokenizes itself;
- word-level `tokenizers` JSON (Dart v2: one token per tag), which llama.cpp cannot tokenize. Its whole
  tokenizer.json travels inside the GGUF and dtg tokenizes it in Python (`dtg_cli.wordlevel`).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dtg_cli import jsontext
from dtg_cli.errors import CheckpointError

log = logging.getLogger("dtg")

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
        return jsontext.loads(_read_text(path))
    except jsontext.BadJSON as e:
        raise CheckpointError(f"{path}: {e}; download it again") from e


def _added_tokens(directory: Path) -> dict[int, tuple[str, bool]]:
    """Added tokens by id, with whether each is special, from whichever HF files the checkpoint has."""
    added: dict[int, tuple[str, bool]] = {}
    try:
        path = directory / "added_tokens.json"
        if path.is_file():
            for content, idx in _object(_read_json(path), path).items():
                added[int(idx)] = (str(content), True)
        path = directory / "tokenizer.json"
        if path.is_file():
            for tok in _object(_read_json(path), path).get("added_tokens") or []:
                added[int(tok["id"])] = (str(tok["content"]), bool(tok.get("special", False)))
        path = directory / "tokenizer_config.json"
        if path.is_file():
            for idx, tok in (_object(_read_json(path), path).get("added_tokens_decoder") or {}).items():
                added[int(idx)] = (str(tok["content"]), bool(tok.get("special", False)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed added tokens ({type(e).__name__}: {e}); download it again") from e
    return added


def _object(data, path: Path) -> dict:
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}; download it again")
    return data


def _tokenizer_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    return _object(_read_json(path), path) if path.is_file() else {}


def _special_token_names(directory: Path) -> dict[str, str]:
    """bos/eos/unk/pad token texts from special_tokens_map.json and tokenizer_config.json."""
    names: dict[str, str] = {}
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / filename
        if not path.is_file():
            continue
        data = _object(_read_json(path), path)
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
    extras = _added_tokens(directory), _special_token_names(directory), _tokenizer_config(directory)
    return _complete_llama_vocab(directory, tokens, scores, types, add_dummy_prefix, vocab_size, {}, *extras)


def _complete_llama_vocab(
    directory: Path,
    tokens: list[str],
    scores: list[float],
    types: list[int],
    add_dummy_prefix: bool,
    vocab_size: int,
    template_adds: dict[str, bool],
    added: dict[int, tuple[str, bool]],
    names: dict[str, str],
    config: dict,
) -> SentencePieceVocab:
    """Append the added tokens, pad to the embedding size, and find the special ids and BOS/EOS rules
    (`added`, `names` and `config`: `_added_tokens`, `_special_token_names`, `_tokenizer_config`)."""
    for idx, (content, special) in sorted(added.items()):
        if idx < len(tokens):
            continue  # the base model's own control tokens (<s>, </s>, <unk>) are listed again
        if idx != len(tokens):
            raise CheckpointError(f"{directory}: added token {content!r} has id {idx}, leaving a gap after {len(tokens) - 1}")
        tokens.append(content)
        scores.append(-1000.0)
        types.append(CONTROL if special else USER_DEFINED)
    if len(tokens) > vocab_size:
        raise CheckpointError(f"{directory}: the tokenizer has {len(tokens)} tokens but config.json says vocab_size {vocab_size}")
    while len(tokens) < vocab_size:  # embedding rows beyond the tokenizer
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(UNUSED)

    vocab = SentencePieceVocab(tokens, scores, types, add_dummy_prefix)
    index = {t: i for i, t in enumerate(tokens)}
    defaults = {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}
    for kind in ("bos", "eos", "unk", "pad"):
        text = names.get(kind, defaults.get(kind))
        if text in index:
            setattr(vocab, f"{kind}_id", index[text])
    vocab.add_bos = bool(config.get("add_bos_token", template_adds.get("bos", True)))
    vocab.add_eos = bool(config.get("add_eos_token", template_adds.get("eos", False)))
    return vocab


# --- a SentencePiece tokenizer saved as tokenizer.json (BPE with byte fallback) ---------------------

SPACE = "\u2581"  # SentencePiece's visible space, "▁"
_LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast")
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def _spacing_rule(data: dict, config: dict, path: Path) -> tuple[str, bool]:
    """How the HF tokenizer puts SentencePiece's leading "▁" on a text: (scheme, skipped when the text has one).

    scheme: "always" (before the text and after every special token, as SentencePiece and llama.cpp do),
    "first" (before the text only) or "never". transformers 5 builds a LLaMA tokenizer's pre-tokenizer from
    tokenizer_config.json (`add_prefix_space`, `legacy`) and ignores tokenizer.json's; other tokenizer
    classes run tokenizer.json as written.
    """
    if config.get("tokenizer_class") in _LLAMA_TOKENIZER_CLASSES:
        if config.get("add_prefix_space") is False:
            return "never", True
        return ("always" if config.get("legacy") is True else "first"), True
    steps = _steps(data.get("normalizer")) + _steps(data.get("pre_tokenizer"))
    escapes = any(
        (s.get("type") == "Replace" and s.get("content") == SPACE and (s.get("pattern") or {}).get("String") == " ")
        or s.get("type") == "Metaspace"
        for s in steps
    )
    if not escapes:
        raise CheckpointError(
            f"{path}: a BPE tokenizer that does not write spaces as {SPACE!r}; dtg converts SentencePiece-style "
            "BPE (LLaMA: byte fallback, ▁ for spaces) and word-level tokenizers (Dart v2)"
        )
    for s in steps:
        if s.get("type") == "Prepend" and s.get("prepend") == SPACE:
            return "always", False  # transformers 4's legacy form: prepended to every piece of text
        if s.get("type") == "Metaspace":
            scheme = s.get("prepend_scheme")
            if scheme is None:  # tokenizers before 0.14
                scheme = "always" if s.get("add_prefix_space", True) else "never"
            if scheme not in ("always", "first", "never"):
                raise CheckpointError(f"{path}: Metaspace prepend_scheme {scheme!r} is unknown")
            if s.get("split"):
                log.warning(
                    "%s: the Metaspace pre-tokenizer splits words before merging; llama.cpp does not, so runs "
                    "of spaces may tokenize differently",
                    path.name,
                )
            return scheme, True
    return "never", False


def _steps(component) -> list[dict]:
    """The steps of a tokenizers normalizer or pre-tokenizer, flattened out of Sequences."""
    if not isinstance(component, dict):
        return []
    if component.get("type") == "Sequence":
        inner = component.get("normalizers") or component.get("pretokenizers") or []
        return [step for c in inner for step in _steps(c)]
    return [component]


def _template_adds(data: dict, bos: str, eos: str) -> dict[str, bool]:
    """Whether tokenizer.json's post-processor puts BOS before and EOS after a single text."""
    template = (data.get("post_processor") or {}).get("single")
    if not isinstance(template, list):
        return {}
    pieces = [(item.get("SpecialToken") or {}).get("id") for item in template if isinstance(item, dict)]
    return {"bos": bool(pieces) and pieces[0] == bos, "eos": bool(pieces) and pieces[-1] == eos}


def load_llama_bpe_vocab(directory: Path, data: dict, vocab_size: int) -> SentencePieceVocab:
    """A SentencePiece vocabulary for llama.cpp from a BPE tokenizer.json with byte fallback.

    llama.cpp's SentencePiece tokenizer repeatedly joins the adjacent pair whose union is the vocabulary
    piece with the highest score; BPE applies the merge of lowest rank. A piece's score is therefore minus
    the rank of the first merge that makes it, which gives the same order of merges.
    """
    path = directory / "tokenizer.json"
    model = data["model"]
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list) or not all(isinstance(i, int) for i in vocab.values()):
        raise CheckpointError(f"{path}: a BPE tokenizer needs a vocab object of ids and a merges list; download it again")
    rank: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    for r, merge in enumerate(merges):
        pair = merge.split(" ", 1) if isinstance(merge, str) else merge
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise CheckpointError(f"{path}: merge {r} is {json.dumps(merge)}, not a pair of pieces; download it again")
        rank.setdefault(pair[0] + pair[1], r)
        pairs.add((pair[0], pair[1]))
    size = max(vocab.values()) + 1
    by_id: list[str | None] = [None] * size
    for piece, idx in vocab.items():
        if idx < 0 or by_id[idx] is not None:
            raise CheckpointError(f"{path}: token id {idx} is used twice or negative; download it again")
        by_id[idx] = piece
    added = _added_tokens(directory)
    if missing := [i for i, p in enumerate(by_id) if p is None and i not in added]:
        raise CheckpointError(f"{path}: no token has id {missing[0]}; download it again")
    names = _special_token_names(directory)
    unk = names.get("unk", "<unk>")
    tokens, scores, types = [], [], []
    for idx, piece in enumerate(by_id):
        if piece is None or idx in added:
            content, special = added[idx]
            tokens.append(content)
            scores.append(0.0)
            types.append(UNKNOWN if content == unk else CONTROL if special else USER_DEFINED)
        elif model.get("byte_fallback") and _BYTE_PIECE.fullmatch(piece):
            tokens.append(piece)
            scores.append(0.0)
            types.append(BYTE)
        else:
            tokens.append(piece)
            scores.append(float(-rank[piece]) if piece in rank else float(-(len(merges) + idx)))
            types.append(NORMAL)
    _check_merges_cover_the_vocabulary(vocab, pairs, path)

    config = _tokenizer_config(directory)
    scheme, skips_leading_space = _spacing_rule(data, config, path)
    if scheme == "first":
        log.warning(
            '%s: transformers puts "▁" before the start of the text only (tokenizer_config.json does not say '
            '"legacy": true); llama.cpp also puts one after every special token, so text that follows a special '
            "token tokenizes differently",
            path.name,
        )
    elif scheme == "always" and skips_leading_space:
        log.warning(
            '%s: transformers adds no "▁" before a text that already starts with a space; llama.cpp always '
            "adds one, so such text (at the start or after a special token) tokenizes differently",
            path.name,
        )
    adds = _template_adds(data, names.get("bos", "<s>"), names.get("eos", "</s>"))
    return _complete_llama_vocab(directory, tokens, scores, types, scheme != "never", vocab_size, adds, added, names, config)


def _check_merges_cover_the_vocabulary(vocab: dict, pairs: set, path: Path) -> None:
    """llama.cpp joins any two pieces whose union is in the vocabulary; BPE only those its merges list."""
    for piece in vocab:
        if len(piece) < 2 or _BYTE_PIECE.fullmatch(piece):
            continue
        for cut in range(1, len(piece)):
            a, b = piece[:cut], piece[cut:]
            if a in vocab and b in vocab and (a, b) not in pairs:
                log.warning(
                    "%s: the merges do not list %r + %r although both and %r are pieces; llama.cpp may join "
                    "pieces that transformers keeps apart",
                    path.name,
                    a,
                    b,
                    piece,
                )
                return


def load_wordlevel_vocab(path: Path, text: str, data: dict, vocab_size: int) -> WordLevelVocab:
    """A word-level tokenizer.json (Dart v2), carried whole into the GGUF."""
    model = data["model"]
    if not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{path}: a WordLevel tokenizer without a vocab object; download it again")
    try:
        added = {str(t["content"]): int(t["id"]) for t in data.get("added_tokens") or []}
        by_text = {**{str(k): int(v) for k, v in model["vocab"].items()}, **added}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed vocabulary ({type(e).__name__}: {e}); download it again") from e
    size = max(by_text.values(), default=-1) + 1
    if size > vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {size} tokens but config.json says vocab_size {vocab_size}")
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
    """The checkpoint's vocabulary: tokenizer.model (SentencePiece), else tokenizer.json (word-level, or
    SentencePiece-style BPE with byte fallback, as transformers 5 saves LLaMA tokenizers)."""
    directory = Path(directory)
    if (directory / "tokenizer.model").is_file():
        return load_sentencepiece_vocab(directory, vocab_size)
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no tokenizer (tokenizer.model or tokenizer.json); download the checkpoint's tokenizer files too"
        )
    text = _read_text(path)
    try:
        data = _object(jsontext.loads(text), path)
    except jsontext.BadJSON as e:
        raise CheckpointError(f"{path}: {e}; download it again") from e
    model = data.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind == "WordLevel":
        return load_wordlevel_vocab(path, text, data, vocab_size)
    if kind == "BPE" and model.get("byte_fallback"):
        return load_llama_bpe_vocab(directory, data, vocab_size)
    found = (
        f"a {kind} model" + (" without byte fallback" if kind == "BPE" else "")
        if isinstance(kind, str)
        else f"model {json.dumps(model)[:40]}"
    )
    raise CheckpointError(
        f"{path}: found {found}; dtg needs a WordLevel tokenizer (Dart v2), a BPE with byte fallback "
        "(LLaMA's SentencePiece as transformers saves it) or a tokenizer.model"
    )
