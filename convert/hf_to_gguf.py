"""Hugging Face checkpoint (LLaMA, Mistral, Mixtral) -> GGUF F16, one tensor at a time."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtg_cli.convert.config import ModelConfig
from dtg_cli.convert.safetensors import SafetensorsCheckpoint
from dtg_cli.convert.vocab import SentencePieceVocab, WordLevelVocab, load_vocab
from dtg_cli.errors import CheckpointError

# One tensor-progress callback: (gguf tensor name, index starting at 1, total).
TensorProgress = Callable[[str, int, int], None]


@dataclass
class PlannedTensor:
    """One GGUF tensor and the checkpoint tensors it is made of."""

    name: str
    sources: list[str]
    shape: tuple[int, ...]
    keep_f32: bool
    permute_heads: int = 0  # >0: q/k rotate-half -> interleaved rope layout, with this many heads


_EXPERT = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")


def permute_for_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF stores q/k rows per head as [first halves..., second halves...]; llama.cpp wants them interleaved."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def plan_tensors(config: ModelConfig, ckpt: SafetensorsCheckpoint) -> list[PlannedTensor]:
    import gguf

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.n_layers)
    planned: dict[str, PlannedTensor] = {}
    experts: dict[tuple[int, str], dict[int, str]] = {}
    for hf_name in ckpt.names():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if m := _EXPERT.match(hf_name):
            experts.setdefault((int(m[1]), m[3]), {})[int(m[2])] = hf_name
            continue
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = name_map.get_name(base)
        if gguf_base is None or suffix not in ("weight", "bias") or (suffix == "bias" and not _bias_expected(config, base)):
            raise CheckpointError(f"{ckpt.directory}: unexpected tensor {hf_name!r} for {config.architecture}")
        shape = ckpt.shape(hf_name)
        heads = 0
        if base.endswith("self_attn.q_proj"):
            heads = config.n_heads
        elif base.endswith("self_attn.k_proj"):
            heads = config.n_kv_heads
        keep_f32 = len(shape) == 1 or gguf_base.endswith("ffn_gate_inp")
        planned[f"{gguf_base}.{suffix}"] = PlannedTensor(f"{gguf_base}.{suffix}", [hf_name], shape, keep_f32, heads)

    for (layer, which), by_expert in sorted(experts.items()):
        if sorted(by_expert) != list(range(config.n_experts)):
            raise CheckpointError(
                f"{ckpt.directory}: layer {layer} has experts {sorted(by_expert)} for {which}, expected 0..{config.n_experts - 1}"
            )
        sources = [by_expert[e] for e in range(config.n_experts)]
        gguf_base = name_map.get_name(f"model.layers.{layer}.block_sparse_moe.experts.{which}")
        shape = (config.n_experts, *ckpt.shape(sources[0]))
        planned[gguf_base + ".weight"] = PlannedTensor(gguf_base + ".weight", sources, shape, False)

    _check_complete(config, planned, ckpt.directory)
    return sorted(planned.values(), key=_tensor_order)


def _bias_expected(config: ModelConfig, base: str) -> bool:
    """Whether config.json's attention_bias / mlp_bias give `base` (an HF module name) a bias."""
    if base.endswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")):
        return config.attention_bias
    return config.mlp_bias and base.endswith(("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))


def _tensor_order(t: PlannedTensor):
    m = re.match(r"blk\.(\d+)\.", t.name)
    if m:
        return (1, int(m[1]), t.name)
    return (0 if t.name.startswith("token_embd") else 2, 0, t.name)


def _check_complete(config: ModelConfig, planned: dict[str, PlannedTensor], directory: Path) -> None:
    required = {"token_embd.weight": (config.vocab_size, config.hidden_size), "output_norm.weight": None}
    if not config.tie_embeddings:
        required["output.weight"] = (config.vocab_size, config.hidden_size)
    ffn = ["ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] if config.n_experts else ["ffn_gate", "ffn_up", "ffn_down"]
    for i in range(config.n_layers):
        for part in ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", *ffn]:
            required[f"blk.{i}.{part}.weight"] = None
        # A bias that config.json announces must be there: a missing one would silently be zero.
        if config.attention_bias:
            required.update({f"blk.{i}.{p}.bias": None for p in ("attn_q", "attn_k", "attn_v", "attn_output")})
        if config.mlp_bias:
            required.update({f"blk.{i}.{p}.bias": None for p in ("ffn_gate", "ffn_up", "ffn_down")})
    missing = [name for name in required if name not in planned]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise CheckpointError(f"{directory}: the checkpoint lacks tensors for {shown}; it is incomplete")
    for name, shape in required.items():
        if shape and tuple(planned[name].shape) != shape:
            raise CheckpointError(f"{directory}: tensor {name} has shape {planned[name].shape}, config.json implies {shape}")


def _load(ckpt: SafetensorsCheckpoint, t: PlannedTensor) -> np.ndarray:
    if len(t.sources) > 1:
        data = np.stack([ckpt.load(s) for s in t.sources])
    else:
        data = ckpt.load(t.sources[0])
    if t.permute_heads:
        data = permute_for_rope(data, t.permute_heads)
    return data.astype(np.float32 if t.keep_f32 else np.float16)


@dataclass
class SourceInfo:
    """Where a checkpoint came from, recorded in the GGUF metadata."""

    name: str
    repo: str | None = None
    revision: str | None = None
    license: str | None = None


def read_license(directory: Path) -> str | None:
    """The `license:` field of the model card's YAML front matter, if the checkpoint has a README.md."""
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    if m and (lic := re.search(r"^license:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", m[1], re.M)):
        return lic[1]
    return None


def write_gguf_f16(directory: Path, out_path: Path, source: SourceInfo, on_tensor: TensorProgress | None = None) -> None:
    """Write the checkpoint in `directory` to `out_path` as a GGUF with F16 weights (F32 norms and router)."""
    import gguf

    directory = Path(directory)
    config = ModelConfig.from_dir(directory)
    vocab = load_vocab(directory, config.vocab_size)
    ckpt = SafetensorsCheckpoint(directory)
    plan = plan_tensors(config, ckpt)

    writer = gguf.GGUFWriter(out_path, "llama")
    try:
        _write_metadata(writer, config, source)
        _write_vocab(writer, vocab)
        for t in plan:
            dtype = np.float32 if t.keep_f32 else np.float16
            writer.add_tensor_info(t.name, t.shape, np.dtype(dtype), int(np.prod(t.shape)) * np.dtype(dtype).itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, t in enumerate(plan, 1):
            writer.write_tensor_data(_load(ckpt, t))
            if on_tensor:
                on_tensor(t.name, i, len(plan))
    finally:
        writer.close()


def _write_metadata(writer, config: ModelConfig, source: SourceInfo) -> None:
    import gguf

    writer.add_name(source.name)
    if source.repo:
        writer.add_source_repo_url(f"https://huggingface.co/{source.repo}")
        writer.add_string("dtg.source.repo", source.repo)
    if source.revision:
        writer.add_string("dtg.source.revision", source.revision)
    if source.license:
        writer.add_license(source.license)
    writer.add_string("dtg.source.architecture", config.architecture)
    writer.add_string("dtg.source.hidden_act", config.activation)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_rope_dimension_count(config.head_dim)
    if config.head_dim != config.hidden_size // config.n_heads:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    if config.rope_linear_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_linear_factor)
    writer.add_vocab_size(config.vocab_size)
    if config.n_experts:
        writer.add_expert_count(config.n_experts)
        writer.add_expert_used_count(config.n_experts_used)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_vocab(writer, vocab: SentencePieceVocab | WordLevelVocab) -> None:
    import gguf

    if isinstance(vocab, WordLevelVocab):
        # llama.cpp cannot tokenize a word-level vocabulary: declare none, so that it runs from token ids,
        # and carry the tokenizer itself for dtg to use.
        writer.add_tokenizer_model("none")
        writer.add_string(gguf.Keys.Tokenizer.HF_JSON, vocab.tokenizer_json)
        for kind, idx in vocab.special_ids.items():
            writer.add_uint32(f"tokenizer.ggml.{kind}_token_id", idx)
        return
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    for kind in ("bos", "eos", "unk", "pad"):
        idx = getattr(vocab, f"{kind}_id")
        if idx is not None:
            writer.add_uint32(f"tokenizer.ggml.{kind}_token_id", idx)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_add_space_prefix(vocab.add_dummy_prefix)
