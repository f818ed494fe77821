"""Build Hugging Face checkpoint directories with random weights in the real models' formats.

Used by the test fixtures (tiny sizes) and by the benchmarks (the real sizes). The architectures,
tensor names, dtypes and tokenizer files are those of p1atdev's Dart v2 and KBlueLeaf's DanTagGen;
only the weights are random, scaled so that next-token distributions are peaked.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"

DART_SPECIAL_TOKENS = (
    ["<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>", "<|sep|>", "<|mask|>"]
    + ["<general>", "</general>", "<character>", "</character>", "<copyright>", "</copyright>"]
    + [f"<|rating:{r}|>" for r in ("sfw", "nsfw", "general", "sensitive", "questionable", "explicit")]
    + [f"<|quality:{q}|>" for q in ("best", "high", "normal", "low", "worst")]
    + [f"<|length:{x}|>" for x in ("very_short", "short", "medium", "long", "very_long")]
    + [f"<|aspect_ratio:{x}|>" for x in ("ultra_wide", "wide", "square", "tall", "ultra_tall")]
    + ["<|input_start|>", "<|input_end|>", "<|keep_identity|>"]
    + [f"<|identity:{x}|>" for x in ("none", "lax", "strict")]
    + [f"<|reserved_{i}|>" for i in range(64)]
)
assert len(DART_SPECIAL_TOKENS) == 103

DANTAGGEN_ADDED_TOKENS = ("<|input_end|>", "<|empty|>", "<|very_short|>", "<|short|>", "<|long|>", "<|very_long|>")
# TIPO's 13 added tokens at 32000-32012 (TIPO.md section 1, from the repos' added_tokens.json).
TIPO_ADDED_TOKENS = (
    "<|empty|>", "<|very_short|>", "<|short|>", "<|long|>", "<|very_long|>", "<|tag_to_long|>", "<|long_to_tag|>",
    "<|short_to_tag|>", "<|short_to_long|>", "<|tag_to_short_to_long|>", "<|short_to_tag_to_long|>",
    "<|short_to_long_to_tag|>", "<|gen_meta|>",
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    architecture: str  # LlamaForCausalLM | MistralForCausalLM | MixtralForCausalLM
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    rope_theta: float
    dtype: str  # BF16 | F32 | F16
    experts: int = 0
    experts_used: int = 0
    hidden_act: str = "silu"
    rms_eps: float = 1e-5
    added: tuple[str, ...] = DANTAGGEN_ADDED_TOKENS  # a LLaMA model's tokens after llama-2's 32000

    @property
    def family(self) -> str:
        if self.architecture != "LlamaForCausalLM":
            return "dart"
        return "tipo" if "<|tag_to_long|>" in self.added else "dantaggen"


# The real dimensions (REFERENCE.md), for benchmarks.
DART_MOE = Spec("MixtralForCausalLM", 768, 3072, 4, 8, 1, 30649, 1024, 1000.0, "BF16", 4, 2)
DART_DENSE = Spec("MistralForCausalLM", 768, 3072, 8, 8, 1, 30649, 1024, 1000.0, "BF16")
DANTAGGEN = Spec("LlamaForCausalLM", 1024, 3072, 24, 16, 16, 32006, 2048, 10000.0, "F32", hidden_act="mish", rms_eps=1e-6)
TIPO_200M = Spec("LlamaForCausalLM", 768, 2304, 20, 12, 12, 32013, 2048, 10000.0, "F32", added=TIPO_ADDED_TOKENS)

# Tiny versions for tests: multiples of 256 so that Q6_K really quantizes every matrix.
TINY = {
    "dart-moe": replace(DART_MOE, hidden=256, intermediate=512, layers=2, heads=4),
    "dart-dense": replace(DART_DENSE, hidden=256, intermediate=512, layers=2, heads=4),
    "dantaggen": replace(DANTAGGEN, hidden=256, intermediate=512, layers=2, heads=4, kv_heads=4, hidden_act="silu"),
    "tipo": replace(TIPO_200M, hidden=256, intermediate=512, layers=2, heads=4, kv_heads=4),
}


def danbooru_tags() -> list[tuple[str, int, int]]:
    """(name with spaces, category, post count) for every tag of the bundled database, most used first."""
    with gzip.open(DATA / "danbooru_tags.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = [(r[0].replace("_", " "), int(r[1]), int(r[2])) for r in csv.reader(f)]
    return sorted(rows, key=lambda r: -r[2])


def dart_vocab() -> list[str]:
    """103 special tokens, then general, copyright and character tags in Dart v2's proportions."""
    counts = {0: 13391, 3: 3739, 4: 13416}
    by_category: dict[int, list[str]] = {c: [] for c in counts}
    seen = set(DART_SPECIAL_TOKENS)
    for name, category, _ in danbooru_tags():
        if category in counts and len(by_category[category]) < counts[category] and "," not in name and name not in seen:
            seen.add(name)
            by_category[category].append(name)
    return DART_SPECIAL_TOKENS + by_category[0] + by_category[3] + by_category[4]


def write_dart_tokenizer(directory: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(dart_vocab())}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r",(?:\s)*"), behavior="removed")
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in DART_SPECIAL_TOKENS])
    tokenizer.save(str(directory / "tokenizer.json"))
    specials = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024, **specials}, indent=2)
    )
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def write_dantaggen_tokenizer(directory: Path, added: tuple[str, ...] = DANTAGGEN_ADDED_TOKENS) -> None:
    """llama-2's SentencePiece model with `added` tokens from 32000, as the DanTagGen and TIPO repos have it."""
    shutil.copy(DATA / "llama2_tokenizer.model", directory / "tokenizer.model")
    decoder = {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for i, c in enumerate(["<unk>", "<s>", "</s>"])
    }
    for i, content in enumerate(added, 32000):
        decoder[str(i)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "added_tokens_decoder": decoder,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
    (directory / "added_tokens.json").write_text(json.dumps({c: i for i, c in enumerate(added, 32000)}, indent=2))


def write_config(directory: Path, spec: Spec) -> None:
    config = {
        "architectures": [spec.architecture],
        "model_type": {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "MixtralForCausalLM": "mixtral"}[spec.architecture],
        "vocab_size": spec.vocab,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": spec.context,
        "rope_theta": spec.rope_theta,
        "rms_norm_eps": spec.rms_eps,
        "hidden_act": spec.hidden_act,
        "tie_word_embeddings": False,
        "torch_dtype": {"BF16": "bfloat16", "F32": "float32", "F16": "float16"}[spec.dtype],
        "bos_token_id": 0 if spec.family == "dart" else 1,
        "eos_token_id": 1 if spec.family == "dart" else 2,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }
    if spec.architecture != "LlamaForCausalLM":
        config["sliding_window"] = None
    if spec.experts:
        config.update(
            num_local_experts=spec.experts, num_experts_per_tok=spec.experts_used, router_aux_loss_coef=0.02, output_router_logits=False
        )
    if spec.architecture == "LlamaForCausalLM":
        config.update(attention_bias=False, mlp_bias=False, pretraining_tp=1, rope_scaling=None)
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def tensor_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes, in the layout the real checkpoints use."""
    head_dim = spec.hidden // spec.heads
    shapes = {"model.embed_tokens.weight": (spec.vocab, spec.hidden)}
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (spec.hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (spec.hidden,)
        shapes[p + "self_attn.q_proj.weight"] = (spec.heads * head_dim, spec.hidden)
        shapes[p + "self_attn.k_proj.weight"] = (spec.kv_heads * head_dim, spec.hidden)
        shapes[p + "self_attn.v_proj.weight"] = (spec.kv_heads * head_dim, spec.hidden)
        shapes[p + "self_attn.o_proj.weight"] = (spec.hidden, spec.heads * head_dim)
        if spec.experts:
            shapes[p + "block_sparse_moe.gate.weight"] = (spec.experts, spec.hidden)
            for e in range(spec.experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                shapes[q + "w1.weight"] = (spec.intermediate, spec.hidden)
                shapes[q + "w2.weight"] = (spec.hidden, spec.intermediate)
                shapes[q + "w3.weight"] = (spec.intermediate, spec.hidden)
        else:
            shapes[p + "mlp.gate_proj.weight"] = (spec.intermediate, spec.hidden)
            shapes[p + "mlp.up_proj.weight"] = (spec.intermediate, spec.hidden)
            shapes[p + "mlp.down_proj.weight"] = (spec.hidden, spec.intermediate)
    shapes["model.norm.weight"] = (spec.hidden,)
    shapes["lm_head.weight"] = (spec.vocab, spec.hidden)
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if len(shape) == 1:  # norms: around 1, not exactly, so that a mix-up would show
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    fan_in = shape[-1]
    if name == "lm_head.weight":
        scale = 5.0 / np.sqrt(fan_in)  # logits with a spread of tens: peaked next-token distributions
    elif name == "model.embed_tokens.weight":
        scale = 1.0
    elif name.endswith("gate.weight"):
        scale = 4.0 / np.sqrt(fan_in)  # a router with clear preferences
    else:
        scale = 1.0 / np.sqrt(fan_in)
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def to_bytes(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return array.astype("<f4").tobytes()
    if dtype == "F16":
        return array.astype("<f2").tobytes()
    bits = array.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype("<u2").tobytes()


def write_safetensors(directory: Path, spec: Spec, seed: int = 0, shards: int = 1) -> None:
    """Write random weights tensor by tensor (never the whole model in memory)."""
    shapes = tensor_shapes(spec)
    names = list(shapes)
    itemsize = 2 if spec.dtype in ("BF16", "F16") else 4
    groups = [names[i::shards] for i in range(shards)] if shards > 1 else [names]
    weight_map = {}
    for index, group in enumerate(groups, 1):
        filename = "model.safetensors" if shards == 1 else f"model-{index:05d}-of-{shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in group:
            nbytes = int(np.prod(shapes[name])) * itemsize
            header[name] = {"dtype": spec.dtype, "shape": list(shapes[name]), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = filename
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (directory / filename).open("wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for name in group:
                # one generator per tensor: the same weights however the file is sharded
                rng = np.random.default_rng([seed, names.index(name)])
                f.write(to_bytes(random_tensor(name, shapes[name], rng), spec.dtype))
    if shards > 1:
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))


def build_checkpoint(directory: Path, spec: Spec, seed: int = 0, shards: int = 1, license: str | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_config(directory, spec)
    if spec.family == "dart":
        write_dart_tokenizer(directory)
    else:
        write_dantaggen_tokenizer(directory, spec.added)
    write_safetensors(directory, spec, seed, shards)
    if license:
        (directory / "README.md").write_text(f"---\nlicense: {license}\n---\n# random-weight test checkpoint\n")
    return directory


# --- checkpoints saved by the installed transformers (what users re-save today: transformers 5 writes
# `rope_parameters` and a LLaMA tokenizer as tokenizer.json only) --------------------------------------


def transformers_config(spec: Spec, **overrides):
    """The transformers config object of `spec`, built by transformers itself."""
    import transformers

    cls = {
        "LlamaForCausalLM": transformers.LlamaConfig,
        "MistralForCausalLM": transformers.MistralConfig,
        "MixtralForCausalLM": transformers.MixtralConfig,
    }[spec.architecture]
    kwargs = dict(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.context,
        rms_norm_eps=spec.rms_eps,
        hidden_act=spec.hidden_act,
        tie_word_embeddings=False,
        bos_token_id=0 if spec.family == "dart" else 1,
        eos_token_id=1 if spec.family == "dart" else 2,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
    )
    if spec.architecture != "LlamaForCausalLM":
        kwargs["sliding_window"] = None
    if spec.experts:
        kwargs.update(num_local_experts=spec.experts, num_experts_per_tok=spec.experts_used)
    kwargs.update(overrides)
    config = cls(**kwargs)
    config.architectures = [spec.architecture]
    return config


def save_with_transformers(directory: Path, spec: Spec, seed: int = 0, legacy: bool | None = True, **overrides) -> Path:
    """A checkpoint written by `save_pretrained` of the installed transformers, with this module's random
    weights (the same values as `build_checkpoint` for the same seed where the tensors are the same).

    legacy: True for the 2024 llama-2-derived repos (a "legacy": true tokenizer_config.json, which
    transformers 5 reads but does not write back); False or None leave transformers' own spacing.
    """
    import torch
    import transformers

    directory = Path(directory)
    config = transformers_config(spec, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = {name: i for i, name in enumerate(tensor_shapes(spec))}
    others = {name: len(names) + i for i, name in enumerate(sorted(model.state_dict()))}  # transformers' own layout
    state = {}
    for name, param in model.state_dict().items():
        shape = tuple(param.shape)
        index = names.get(name, others[name])
        rng = np.random.default_rng([seed, index])
        value = random_tensor(name, shape, rng)
        if name.endswith(".bias"):
            value = 0.3 * rng.standard_normal(shape).astype(np.float32)  # biases big enough to matter
        state[name] = torch.from_numpy(value)
    model.load_state_dict(state)
    model.to({"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[spec.dtype])
    model.save_pretrained(directory)

    scratch = directory / ".tokenizer-source"
    scratch.mkdir()
    if spec.family == "dart":
        write_dart_tokenizer(scratch)
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(scratch / "tokenizer.json"))
    else:
        write_dantaggen_tokenizer(scratch, spec.added)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(scratch), legacy=bool(legacy))
    tokenizer.save_pretrained(str(directory))
    shutil.rmtree(scratch)
    if spec.family != "dart" and legacy is not None:
        path = directory / "tokenizer_config.json"
        config_json = json.loads(path.read_text())
        config_json["legacy"] = legacy
        path.write_text(json.dumps(config_json, indent=2))
    return directory
