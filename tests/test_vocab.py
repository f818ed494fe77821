import json
import logging
from pathlib import Path

import pytest

from dtg_cli.convert.vocab import BYTE, CONTROL, UNKNOWN, UNUSED, WordLevelVocab, load_vocab, read_sentencepiece_model
from dtg_cli.errors import CheckpointError
from tests.checkpoints import DANTAGGEN_ADDED_TOKENS, DATA


def test_sentencepiece_reader_matches_the_sentencepiece_library():
    spm = pytest.importorskip("sentencepiece")
    processor = spm.SentencePieceProcessor(model_file=str(DATA / "llama2_tokenizer.model"))
    pieces, add_dummy_prefix = read_sentencepiece_model(DATA / "llama2_tokenizer.model")
    assert len(pieces) == processor.get_piece_size() == 32000
    for i in (0, 1, 2, 3, 259, 1000, 29871, 31999):
        text, score, kind = pieces[i]
        assert text == processor.id_to_piece(i)
        assert score == pytest.approx(processor.get_score(i))
        assert (kind == CONTROL) == processor.is_control(i)
    assert add_dummy_prefix is True


def test_dantaggen_vocab_has_the_six_added_tokens(checkpoints):
    vocab = load_vocab(checkpoints["dantaggen"], 32006)
    assert tuple(vocab.tokens[32000:]) == DANTAGGEN_ADDED_TOKENS
    assert vocab.types[32000:] == [CONTROL] * 6
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (1, 2, 0)
    assert vocab.add_bos and not vocab.add_eos


def test_vocab_is_padded_to_the_embedding_size(checkpoints):
    vocab = load_vocab(checkpoints["dantaggen"], 32010)
    assert len(vocab.tokens) == 32010 and vocab.types[-1] == UNUSED


def test_dart_vocab_carries_the_whole_tokenizer_json(checkpoints):
    vocab = load_vocab(checkpoints["dart-moe"], 30649)
    assert isinstance(vocab, WordLevelVocab)
    assert json.loads(vocab.tokenizer_json)["model"]["type"] == "WordLevel"
    assert vocab.special_ids == {"bos": 0, "eos": 1, "unk": 3, "pad": 2}


def test_corrupt_sentencepiece_model(checkpoint_copy):
    directory = checkpoint_copy("dantaggen")
    (directory / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(CheckpointError, match="not a valid sentencepiece model"):
        load_vocab(directory, 32006)


def test_tokenizer_larger_than_the_embedding(checkpoints):
    with pytest.raises(CheckpointError, match="vocab_size 100"):
        load_vocab(checkpoints["dart-moe"], 100)


# --- a LLaMA tokenizer saved as tokenizer.json only (transformers 5) --------------------------------

SPECIALS = ["<|input_end|>", "<|empty|>", "<|long|>", "<s>", "</s>"]


def varied_texts(count: int) -> list[str]:
    """Text with special tokens inside it, runs of spaces, unicode, emoji, newlines and tabs; none starts
    with a space or has one right after a special token (the case llama.cpp cannot express, tested below)."""
    import random

    rng = random.Random(7)
    words = [
        "hatsune miku",
        "(vocaloid)",
        "1girl",
        "cat ears",
        "café",
        "日本語",
        "Ünïcödé",
        "ß",
        "ﬁ",
        "😀",
        "🎉✨",
        "\u200b",
        "x",
        "don't",
        "a-b_c",
        "\\(cosplay\\)",
        "^^^",
        ":d",
        "İΣ",
        "1.5",
        "zzz",
        "...",
        "ok",
    ]
    gaps = [" ", "  ", "   ", "\n", "\t", "\n\n", " \t", ", ", ",  ", "\r\n", "\u3000", ""]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 9)):
            parts.append(rng.choice(words))
            r = rng.random()
            if r < 0.2:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.9:
                parts.append(rng.choice(gaps))
        text = "".join(parts)
        for special in SPECIALS:  # no space right after a special token
            while special + " " in text or special + "\u3000" in text:
                text = text.replace(special + " ", special + "x").replace(special + "\u3000", special + "x")
        texts.append(text.lstrip(" \u3000") or "x")
    return texts


def test_llama_tokenizer_json_tokenizes_in_llama_cpp_like_hf(saved_checkpoints, saved_ggufs):
    from transformers import AutoTokenizer

    from dtg_cli.llama import Model

    reference = AutoTokenizer.from_pretrained(str(saved_checkpoints["dantaggen"]))
    texts = varied_texts(400) + [
        "hatsune miku (vocaloid)",
        "rating: safe\\nartist: <|empty|>\\ntarget: <|long|>\\ngeneral: 1girl, solo<|input_end|>",
        "quality: masterpiece\nrating: general\ntarget: <|very_long|>\ngeneral: 2girls, café, 日本語<|input_end|>",
        "a\tb\n\nc  d   e",
        "emoji 😀 and 🎉",
    ]
    with Model(saved_ggufs["dantaggen"]["f16"], n_gpu_layers=0) as model:
        mismatches = [t for t in texts if model.tokenize(t) != reference(t)["input_ids"]]
    assert mismatches == []


def test_the_spacing_llama_cpp_cannot_express_is_real_and_reported(saved_checkpoints, saved_ggufs, checkpoint_copy, tmp_path, caplog):
    """transformers 5 adds no "▁" before text that starts with a space; llama.cpp does, as SentencePiece did."""
    from transformers import AutoTokenizer

    from dtg_cli.convert import convert
    from dtg_cli.llama import Model

    reference = AutoTokenizer.from_pretrained(str(saved_checkpoints["dantaggen"]))
    with Model(saved_ggufs["dantaggen"]["f16"], n_gpu_layers=0) as model:
        for text in (" x", "<|long|> <|empty|>"):
            assert model.tokenize(text) != reference(text)["input_ids"], text
    with caplog.at_level(logging.WARNING, logger="dtg"):
        convert(saved_checkpoints["dantaggen"], tmp_path / "a", "f16")
    assert "already starts with a space" in caplog.text


def test_a_tokenizer_without_legacy_spacing_is_reported(saved_checkpoints, tmp_path, caplog):
    """Without "legacy": true, transformers 5 puts no "▁" after special tokens; llama.cpp cannot do that."""
    import shutil

    from dtg_cli.convert import convert

    directory = Path(shutil.copytree(saved_checkpoints["dantaggen"], tmp_path / "ckpt"))
    config = json.loads((directory / "tokenizer_config.json").read_text())
    del config["legacy"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="dtg"):
        convert(directory, tmp_path / "out", "f16")
    assert '"legacy": true' in caplog.text and "after every special token" in caplog.text


def test_scores_follow_the_merge_ranks(saved_checkpoints):
    vocab = load_vocab(saved_checkpoints["dantaggen"], 32006)
    data = json.loads((saved_checkpoints["dantaggen"] / "tokenizer.json").read_text())
    first_merge = data["model"]["merges"][0]
    piece = "".join(first_merge) if isinstance(first_merge, list) else first_merge.replace(" ", "")
    assert vocab.scores[vocab.tokens.index(piece)] == 0.0
    assert vocab.types[:3] == [UNKNOWN, CONTROL, CONTROL] and vocab.types[3:259] == [BYTE] * 256
    assert tuple(vocab.tokens[32000:]) == DANTAGGEN_ADDED_TOKENS and vocab.add_dummy_prefix and vocab.add_bos


@pytest.mark.parametrize(
    "tokenizer_json, message",
    [
        ({"model": 5}, "found model 5; dtg needs a WordLevel tokenizer"),
        ({"model": {"type": "Unigram", "vocab": []}}, "found a Unigram model"),
        ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": False}}, "a BPE model without byte fallback"),
        ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5], "byte_fallback": True}}, "merge 0 is 5"),
        ({"model": {"type": "WordLevel", "vocab": 3}}, "without a vocab object"),
        ([1, 2], "expected a JSON object, found list"),
    ],
)
def test_unusable_tokenizer_json_is_one_line(checkpoint_copy, tokenizer_json, message):
    directory = checkpoint_copy("dart-dense")
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(CheckpointError) as info:
        load_vocab(directory, 30649)
    assert message in str(info.value) and "\n" not in str(info.value)
