import logging
import os

import gguf
import numpy as np
import pytest

from dtg_cli.convert import convert, parse_quants
from dtg_cli.convert.hf_to_gguf import permute_for_rope
from dtg_cli.errors import CheckpointError, DtgError, UsageError
from dtg_cli.wordlevel import WordLevelTokenizer
from tests.checkpoints import TINY


def fields(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {f.name: f.contents() for f in reader.fields.values()}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_f16_metadata(ggufs, kind):
    spec = TINY[kind]
    reader, kv = fields(ggufs[kind]["f16"])
    assert kv["general.architecture"] == "llama"
    assert kv["general.name"] == kind
    assert kv["general.license"] == "apache-2.0"
    assert kv["general.file_type"] == 1
    assert kv["llama.block_count"] == spec.layers
    assert kv["llama.embedding_length"] == spec.hidden
    assert kv["llama.feed_forward_length"] == spec.intermediate
    assert kv["llama.attention.head_count"] == spec.heads
    assert kv["llama.attention.head_count_kv"] == spec.kv_heads
    assert kv["llama.context_length"] == spec.context
    assert kv["llama.rope.freq_base"] == pytest.approx(spec.rope_theta)
    assert kv["llama.rope.dimension_count"] == spec.hidden // spec.heads
    assert kv["llama.vocab_size"] == spec.vocab
    if spec.experts:
        assert (kv["llama.expert_count"], kv["llama.expert_used_count"]) == (4, 2)
    else:
        assert "llama.expert_count" not in kv


def test_tensor_types_and_expert_stacking(ggufs):
    for quant, weight_type in [("f16", "F16"), ("q8_0", "Q8_0"), ("q6_k", "Q6_K")]:
        reader, kv = fields(ggufs["dart-moe"][quant])
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
        assert types["blk.0.attn_norm.weight"] == "F32"
        assert types["blk.0.ffn_gate_inp.weight"] == "F32"  # the router stays exact
        assert types["blk.1.ffn_down_exps.weight"] == weight_type
        assert types["blk.0.attn_q.weight"] == weight_type
        assert shapes["blk.0.ffn_gate_exps.weight"] == (4, 512, 256)
        assert shapes["blk.0.ffn_down_exps.weight"] == (4, 256, 512)
        assert not any(name.startswith("blk.2.") for name in types)
        assert kv["general.file_type"] == {"f16": 1, "q8_0": 7, "q6_k": 18}[quant]


def test_stacked_experts_hold_each_expert_in_order(checkpoints, ggufs):
    from dtg_cli.convert.safetensors import SafetensorsCheckpoint

    ckpt = SafetensorsCheckpoint(checkpoints["dart-moe"])
    reader = gguf.GGUFReader(str(ggufs["dart-moe"]["f16"]))
    stacked = next(t for t in reader.tensors if t.name == "blk.1.ffn_up_exps.weight").data
    for e in range(4):
        expected = ckpt.load(f"model.layers.1.block_sparse_moe.experts.{e}.w3.weight").astype(np.float16)
        np.testing.assert_array_equal(stacked[e], expected)


def test_rope_permutation_interleaves_each_head():
    n_heads, head_dim = 2, 8
    rows = np.arange(n_heads * head_dim, dtype=np.float32)[:, None]
    out = permute_for_rope(rows, n_heads)[:, 0]
    # within a head: rows 0..3 pair with 4..7 (rotate-half) and become neighbours (0,4,1,5,...)
    assert out[:8].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert out[8:].tolist() == [8, 12, 9, 13, 10, 14, 11, 15]


def test_dart_gguf_declares_no_llama_tokenizer_but_carries_its_own(ggufs, checkpoints):
    _, kv = fields(ggufs["dart-moe"]["q6_k"])
    assert kv["tokenizer.ggml.model"] == "none"
    assert "tokenizer.ggml.tokens" not in kv
    tok = WordLevelTokenizer.from_gguf(ggufs["dart-moe"]["q6_k"])
    assert (checkpoints["dart-moe"] / "tokenizer.json").read_text() == kv["tokenizer.huggingface.json"]
    assert tok.encode("<|bos|><general>1girl, cat ears<|input_end|>") == [0, 6, 103, tok.vocab["cat ears"], 34]


def test_dantaggen_gguf_has_a_llama_vocabulary(ggufs):
    _, kv = fields(ggufs["dantaggen"]["f16"])
    assert kv["tokenizer.ggml.model"] == "llama"
    assert len(kv["tokenizer.ggml.tokens"]) == 32006
    assert kv["tokenizer.ggml.tokens"][32000:] == ["<|input_end|>", "<|empty|>", "<|very_short|>", "<|short|>", "<|long|>", "<|very_long|>"]
    assert kv["tokenizer.ggml.token_type"][32000:] == [3] * 6
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert kv["tokenizer.ggml.add_bos_token"] is True


def test_only_requested_quants_are_written_and_no_scratch_file_remains(checkpoints, tmp_path):
    paths = convert(checkpoints["dart-dense"], tmp_path, "q8_0", name="dense")
    assert paths == [tmp_path / "dense-Q8_0.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense-Q8_0.gguf"]
    assert (tmp_path / "dense-Q8_0.gguf").stat().st_mode & 0o044  # readable by others, like any file


def test_existing_output_needs_force(checkpoints, tmp_path):
    convert(checkpoints["dart-dense"], tmp_path, "f16", name="m")
    before = (tmp_path / "m-F16.gguf").stat().st_mtime_ns
    with pytest.raises(DtgError, match="--force"):
        convert(checkpoints["dart-dense"], tmp_path, "f16", name="m")
    assert (tmp_path / "m-F16.gguf").stat().st_mtime_ns == before
    convert(checkpoints["dart-dense"], tmp_path, "f16", name="m", force=True)


def test_interrupted_quantization_leaves_no_gguf(checkpoints, tmp_path, monkeypatch):
    import dtg_cli.convert.pipeline as module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(checkpoints["dart-dense"], tmp_path, "f16,q8_0", name="m")
    assert list(tmp_path.iterdir()) == []


def test_mish_activation_is_a_warning(checkpoint_copy, tmp_path, caplog):
    import json

    directory = checkpoint_copy("dantaggen")
    config = json.loads((directory / "config.json").read_text())
    config["hidden_act"] = "mish"
    (directory / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="dtg"):
        paths = convert(directory, tmp_path, "f16")
    assert paths[0].is_file()
    assert any("hidden_act=mish" in r.getMessage() and "SiLU" in r.getMessage() for r in caplog.records)
    assert fields(paths[0])[1]["dtg.source.hidden_act"] == "mish"


def test_quant_parsing():
    assert parse_quants("Q8_0, f16,q8_0") == ["q8_0", "f16"]
    with pytest.raises(UsageError, match="q4_k"):
        parse_quants("q4_k")
    with pytest.raises(UsageError):
        parse_quants("")


def test_sharded_bf16_checkpoint_converts_like_the_single_file(tmp_path):
    from tests.checkpoints import build_checkpoint

    single = build_checkpoint(tmp_path / "single", TINY["dart-dense"], seed=5)
    sharded = build_checkpoint(tmp_path / "sharded", TINY["dart-dense"], seed=5, shards=3)
    assert len(list(sharded.glob("model-*-of-00003.safetensors"))) == 3
    a = convert(single, tmp_path / "a", "f16", name="m")[0]
    b = convert(sharded, tmp_path / "b", "f16", name="m")[0]
    ra, rb = gguf.GGUFReader(str(a)), gguf.GGUFReader(str(b))
    for ta, tb in zip(ra.tensors, rb.tensors, strict=False):
        assert ta.name == tb.name
        np.testing.assert_array_equal(ta.data, tb.data)


def test_missing_tensor_is_reported(checkpoint_copy, tmp_path):
    import json

    directory = checkpoint_copy("dart-dense")
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="blk.2.attn_norm.weight"):
        convert(directory, tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
