import json

import pytest

from convert.vocab import CONTROL, UNUSED, WordLevelVocab, load_vocab, read_sentencepiece_model
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
    assert vocab.tokens[32000:] == DANTAGGEN_ADDED_TOKENS
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
