"""config.json of a LLaMA, Mistral or Mixtral checkpoint, read in both the transformers 4 and 5 forms.

Every key that changes the forward pass is either carried into the GGUF, so that llama.cpp computes the
same function, or refused with one line naming the key and its value. A key that is present is never
replaced by a default. transformers 4 writes `rope_theta` and `rope_scaling` at the top level;
transformers 5 writes both as `rope_parameters` (`{"rope_theta": ..., "rope_type": ..., "factor": ...}`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from dtg_cli import jsontext
from dtg_cli.errors import CheckpointError
from dtg_cli.gguf_header import BOUNDS

log = logging.getLogger("dtg")

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")

# The defaults of transformers' config classes (identical in 4.x and 5.x), used only for absent keys.
_DEFAULTS = {
    "LlamaForCausalLM": {"max_position_embeddings": 2048, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "sliding_window": None},
    "MistralForCausalLM": {"max_position_embeddings": 131072, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "sliding_window": 4096},
    "MixtralForCausalLM": {"max_position_embeddings": 131072, "rope_theta": 1e6, "rms_norm_eps": 1e-5, "sliding_window": None},
}

# Keys that do not change what a forward pass computes in inference: training switches, generation and
# bookkeeping fields. `pretraining_tp` only splits the matrix products into slices in transformers 4.
_NO_EFFECT = frozenset(
    """_name_or_path architectures model_type transformers_version torch_dtype dtype use_cache
    bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id initializer_range
    attention_dropout router_aux_loss_coef output_router_logits router_jitter_noise pretraining_tp
    output_hidden_states output_attentions return_dict id2label label2id problem_type chunk_size_feed_forward
    is_encoder_decoder tokenizer_class prefix task_specific_params finetuning_task num_labels
    use_return_dict torchscript tf_legacy_loss use_bfloat16 pruned_heads is_decoder add_cross_attention
    cross_attention_hidden_size tie_encoder_decoder max_length min_length do_sample early_stopping
    num_beams num_beam_groups diversity_penalty temperature top_k top_p typical_p repetition_penalty
    length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids num_return_sequences
    output_scores return_dict_in_generate forced_bos_token_id forced_eos_token_id remove_invalid_values
    exponential_decay_length_penalty suppress_tokens begin_suppress_tokens""".split()
)

# Keys read below, by architecture.
_COMMON = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rms_norm_eps",
    "hidden_act",
    "tie_word_embeddings",
    "quantization_config",
}
_READ = {
    "LlamaForCausalLM": _COMMON | {"attention_bias", "mlp_bias"},
    "MistralForCausalLM": _COMMON | {"sliding_window"},
    "MixtralForCausalLM": _COMMON | {"sliding_window", "num_local_experts", "num_experts_per_tok"},
}

# hidden_act values and what llama.cpp makes of them. Its llama graph always computes SiLU.
_SILU = ("silu", "swish")
# DanTagGen's config says mish, and every published GGUF of it (the author's too) computes SiLU: it converts
# with a warning, and --verify measures the difference.
_CLOSE_TO_SILU = ("mish",)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context_length: int
    rope_theta: float
    rms_eps: float
    activation: str
    tie_embeddings: bool
    rope_linear_factor: float | None = None  # linear rope scaling: positions divided by this
    attention_bias: bool = False
    mlp_bias: bool = False
    n_experts: int = 0
    n_experts_used: int = 0

    @classmethod
    def from_dir(cls, directory: Path) -> ModelConfig:
        path = Path(directory) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{directory}: no config.json; is this a Hugging Face checkpoint directory?")
        try:
            cfg = jsontext.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, jsontext.BadJSON) as e:
            raise CheckpointError(f"{path}: not a readable JSON file ({e})") from e
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{path}: not a model configuration (a JSON object)")
        return cls.from_dict(cfg, path)

    @classmethod
    def from_dict(cls, cfg: dict, path: Path) -> ModelConfig:
        """Read `cfg` (the contents of `path`); raise CheckpointError naming the first key that cannot be honoured."""
        keys = _Keys(cfg, path)
        architectures = cfg.get("architectures")
        arch = architectures[0] if isinstance(architectures, list) and architectures else None
        if arch not in SUPPORTED_ARCHITECTURES:
            raise CheckpointError(
                f"{path}: unsupported architecture {arch or '(none given)'}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        defaults = _DEFAULTS[arch]
        if cfg.get("quantization_config") is not None:
            raise CheckpointError(f"{path}: quantization_config is set: this is a quantized checkpoint; convert the unquantized one")

        hidden = keys.integer("hidden_size", bound="embedding_length")
        n_heads = keys.integer("num_attention_heads", bound="attention.head_count")
        # transformers writes null for "derive it" in these two
        n_kv_heads = keys.integer("num_key_value_heads", default=n_heads, null=n_heads, bound="attention.head_count_kv")
        head_dim = keys.integer("head_dim", default=hidden // n_heads, null=hidden // n_heads)
        if n_heads % n_kv_heads:
            raise CheckpointError(f"{path}: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}")
        if head_dim % 2:
            raise CheckpointError(f"{path}: head_dim {head_dim} is odd; rope needs an even head size")

        context = keys.integer("max_position_embeddings", default=defaults["max_position_embeddings"], bound="context_length")
        window = None
        if "sliding_window" in _READ[arch]:
            window = keys.integer("sliding_window", default=defaults["sliding_window"], null=None)  # null: no window
        if window is not None and window < context:
            # Attention over at most `window` tokens is full attention while the context holds no more.
            log.warning(
                "%s: sliding_window %d is shorter than max_position_embeddings %d; llama.cpp attends to the whole "
                "context, so the GGUF's context is limited to %d tokens, where both compute the same",
                path.name,
                window,
                context,
                window,
            )
            context = window

        activation = keys.string("hidden_act", default="silu")
        if activation not in _SILU + _CLOSE_TO_SILU:
            raise CheckpointError(f"{path}: hidden_act {activation!r} is not supported; llama.cpp computes SiLU ('silu')")
        if activation in _CLOSE_TO_SILU:
            log.warning(
                "config.json says hidden_act=%s but llama.cpp computes SiLU: the GGUF will compute a slightly "
                "different function than the checkpoint (dtg convert --verify measures how much)",
                activation,
            )

        n_experts = n_used = 0
        if arch == "MixtralForCausalLM":
            n_experts = keys.integer("num_local_experts", bound="expert_count")
            n_used = keys.integer("num_experts_per_tok", default=2)
            if not 1 <= n_used <= n_experts:
                raise CheckpointError(f"{path}: num_experts_per_tok {n_used} must be between 1 and num_local_experts {n_experts}")

        rope_theta, linear_factor = _rope(cfg, keys, defaults["rope_theta"], path)
        config = cls(
            architecture=arch,
            vocab_size=keys.integer("vocab_size", bound="vocab_size"),
            hidden_size=hidden,
            intermediate_size=keys.integer("intermediate_size", bound="feed_forward_length"),
            n_layers=keys.integer("num_hidden_layers", bound="block_count"),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            context_length=context,
            rope_theta=rope_theta,
            rms_eps=keys.number("rms_norm_eps", default=defaults["rms_norm_eps"], low=0, high=1),  # llama.cpp aborts on eps < 0
            activation=activation,
            tie_embeddings=keys.boolean("tie_word_embeddings", default=False),
            rope_linear_factor=linear_factor,
            attention_bias="attention_bias" in _READ[arch] and keys.boolean("attention_bias", default=False),
            mlp_bias="mlp_bias" in _READ[arch] and keys.boolean("mlp_bias", default=False),
            n_experts=n_experts,
            n_experts_used=n_used,
        )
        unread = sorted(k for k in cfg if k not in _READ[arch] and k not in _NO_EFFECT)
        if unread:
            log.warning(
                "%s: keys %s are not read by dtg or by transformers' %s; the GGUF ignores them",
                path.name,
                ", ".join(unread),
                arch,
            )
        return config


def _rope(cfg: dict, keys: _Keys, default_theta: float, path: Path) -> tuple[float, float | None]:
    """(rope base, linear scaling factor or None) from either form of the rope settings."""
    params = cfg.get("rope_parameters")
    legacy_scaling = cfg.get("rope_scaling")
    if params is not None and not isinstance(params, dict):
        raise CheckpointError(f"{path}: rope_parameters must be an object, got {json.dumps(params)}")
    if legacy_scaling is not None and not isinstance(legacy_scaling, dict):
        raise CheckpointError(f"{path}: rope_scaling must be an object or null, got {json.dumps(legacy_scaling)}")
    # transformers 5 reads rope_parameters; a config that also has the old keys must agree with it.
    scaling = dict(legacy_scaling or {})
    if params is not None:
        scaling.update(params)
    theta_keys = _Keys(scaling, path, prefix="rope_parameters." if params is not None else "rope_scaling.")
    theta = theta_keys.number("rope_theta", default=None) if "rope_theta" in scaling else None
    top_theta = keys.number("rope_theta", default=None) if "rope_theta" in cfg else None
    if theta is not None and top_theta is not None and not math.isclose(theta, top_theta):
        raise CheckpointError(f"{path}: rope_theta {top_theta} and rope_parameters.rope_theta {theta} disagree")
    theta = theta if theta is not None else top_theta if top_theta is not None else default_theta
    if theta <= 0:
        raise CheckpointError(f"{path}: rope_theta must be positive, got {theta}")

    kind = scaling.get("rope_type", scaling.get("type", "default"))
    key = theta_keys.name("rope_type" if "rope_type" in scaling else "type")
    if kind == "default":
        factor = None
    elif kind == "linear":
        factor = theta_keys.number("factor")
        if factor <= 0:
            raise CheckpointError(f"{path}: {theta_keys.name('factor')} must be positive, got {factor}")
    elif isinstance(kind, str):
        raise CheckpointError(f"{path}: {key} {kind!r} is not supported; dtg converts 'default' and 'linear' rope")
    else:
        raise CheckpointError(f"{path}: {key} must be a string, got {json.dumps(kind)}")
    partial = scaling.get("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise CheckpointError(f"{path}: {theta_keys.name('partial_rotary_factor')} {json.dumps(partial)} is not supported")
    return float(theta), factor


class _Keys:
    """Typed reads of a config's keys: a wrong type or value is one line naming the key and what it holds."""

    def __init__(self, cfg: dict, path: Path, prefix: str = ""):
        self.cfg, self.path, self.prefix = cfg, path, prefix

    def name(self, key: str) -> str:
        return self.prefix + key

    _REQUIRED = object()
    _REFUSED = object()

    def _get(self, key: str, default, null=_REFUSED):
        """(value, done): done when the key is absent (the default) or null and `null` says what that means."""
        if key not in self.cfg:
            if default is self._REQUIRED:
                raise CheckpointError(f"{self.path}: {self.name(key)} is missing")
            return default, True
        value = self.cfg[key]
        if value is None and null is not self._REFUSED:
            return null, True
        return value, False

    def _bad(self, key: str, value, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {self.name(key)} must be {what}, got {json.dumps(value)}")

    def integer(self, key: str, default=_REQUIRED, null=_REFUSED, bound: str | None = None) -> int | None:
        """`bound`: the GGUF hyperparameter whose range (`gguf_header.BOUNDS`) the value must be within, the
        same range a GGUF file is checked against before llama.cpp loads it."""
        value, done = self._get(key, default, null)
        if done:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._bad(key, value, "a positive whole number")
        if bound is not None and not BOUNDS[bound][0] <= value <= BOUNDS[bound][1]:
            raise self._bad(key, value, f"at most {BOUNDS[bound][1]} for a model dtg runs")
        return value

    def number(self, key: str, default=_REQUIRED, low: float = -math.inf, high: float = math.inf) -> float:
        """A finite number (a huge int is compared, never converted), strictly between `low` and `high`."""
        value, done = self._get(key, default)
        if done:
            return value
        finite = isinstance(value, float) and math.isfinite(value) or isinstance(value, int) and abs(value) < 10**300
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite:
            raise self._bad(key, value, "a number")
        if not low < value < high:
            raise self._bad(key, value, f"a number between {low} and {high}")
        return float(value)

    def string(self, key: str, default=_REQUIRED) -> str:
        value, done = self._get(key, default)
        if done:
            return value
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def boolean(self, key: str, default=_REQUIRED) -> bool:
        value, done = self._get(key, default)
        if done:
            return value
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value
