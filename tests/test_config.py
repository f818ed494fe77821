"""config.json in the transformers 4 and 5 forms: every setting carried over or refused, never defaulted."""

import json
import logging
from pathlib import Path

import pytest

from dtg_cli.convert.config import ModelConfig
from dtg_cli.errors import CheckpointError

PATH = Path("config.json")

DART_V4 = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 30649,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "max_position_embeddings": 1024,
    "rope_theta": 1000.0,
    "rms_norm_eps": 1e-05,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "sliding_window": None,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "router_aux_loss_coef": 0.02,
    "output_router_logits": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.38.2",
}


def v5(config: dict, **rope) -> dict:
    """The same settings as transformers 5 writes them: the rope settings move into rope_parameters."""
    out = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")}
    out["dtype"] = "bfloat16"
    out["rope_parameters"] = {"rope_theta": config.get("rope_theta", 10000.0), "rope_type": "default", **rope}
    return out


def read(config: dict) -> ModelConfig:
    return ModelConfig.from_dict(config, PATH)


def test_both_forms_read_the_same_settings():
    old, new = read(DART_V4), read(v5(DART_V4))
    assert old == new
    assert new.rope_theta == 1000.0
    assert (new.n_experts, new.n_experts_used, new.head_dim, new.context_length) == (4, 2, 96, 1024)
    assert new.rope_linear_factor is None


@pytest.mark.parametrize(
    "config",
    [
        {**DART_V4, "rope_scaling": {"type": "linear", "factor": 2.0}},
        {**DART_V4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        v5(DART_V4, rope_type="linear", factor=2.0),
    ],
)
def test_linear_rope_scaling_is_carried_in_either_form(config):
    assert read(config).rope_linear_factor == 2.0


def test_absent_keys_take_the_config_class_defaults():
    config = {k: v for k, v in DART_V4.items() if k not in ("rope_theta", "rms_norm_eps", "max_position_embeddings")}
    mixtral = read(config)
    assert (mixtral.rope_theta, mixtral.rms_eps, mixtral.context_length) == (1e6, 1e-5, 131072)
    llama = read({**config, "architectures": ["LlamaForCausalLM"], "num_key_value_heads": None})
    assert (llama.rope_theta, llama.rms_eps, llama.context_length, llama.n_kv_heads) == (10000.0, 1e-6, 2048, 8)


def test_head_dim_and_biases_are_read():
    llama = read({**DART_V4, "architectures": ["LlamaForCausalLM"], "head_dim": 64, "attention_bias": True, "mlp_bias": True})
    assert (llama.head_dim, llama.attention_bias, llama.mlp_bias) == (64, True, True)


def test_a_sliding_window_shorter_than_the_context_limits_the_context(caplog):
    with caplog.at_level(logging.WARNING, logger="dtg"):
        config = read({**DART_V4, "sliding_window": 512})
    assert config.context_length == 512
    assert "sliding_window 512" in caplog.text
    assert read({**DART_V4, "sliding_window": 4096}).context_length == 1024


def test_unknown_keys_are_named(caplog):
    with caplog.at_level(logging.WARNING, logger="dtg"):
        read({**DART_V4, "use_magic_attention": True})
    assert "use_magic_attention" in caplog.text


@pytest.mark.parametrize(
    "config, message",
    [
        ({**DART_V4, "rope_theta": "fast"}, 'rope_theta must be a number, got "fast"'),
        (v5(DART_V4, rope_type="yarn", factor=4.0), "rope_parameters.rope_type 'yarn' is not supported"),
        (v5(DART_V4, rope_type="dynamic", factor=2.0), "rope_type 'dynamic' is not supported"),
        ({**DART_V4, "rope_scaling": {"type": "llama3", "factor": 8.0}}, "rope_scaling.type 'llama3' is not supported"),
        ({**DART_V4, "rope_scaling": {"type": "linear", "factor": "x"}}, 'rope_scaling.factor must be a number, got "x"'),
        ({**DART_V4, "rope_scaling": "linear"}, "rope_scaling must be an object"),
        ({**v5(DART_V4), "rope_theta": 10000.0}, "disagree"),
        ({**DART_V4, "hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({**DART_V4, "num_hidden_layers": 2.5}, "num_hidden_layers must be a positive whole number, got 2.5"),
        ({**DART_V4, "num_local_experts": 0}, "num_local_experts must be a positive whole number, got 0"),
        ({**DART_V4, "num_experts_per_tok": 5}, "num_experts_per_tok 5 must be between 1 and num_local_experts 4"),
        ({**DART_V4, "tie_word_embeddings": "no"}, 'tie_word_embeddings must be true or false, got "no"'),
        ({**DART_V4, "quantization_config": {"quant_method": "gptq"}}, "quantized checkpoint"),
        ({**DART_V4, "architectures": ["GPT2LMHeadModel"]}, "unsupported architecture GPT2LMHeadModel"),
        ({k: v for k, v in DART_V4.items() if k != "hidden_size"}, "hidden_size is missing"),
        ({**DART_V4, "num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        (v5(DART_V4, partial_rotary_factor=0.5), "partial_rotary_factor 0.5 is not supported"),
    ],
)
def test_settings_that_cannot_be_honoured_are_refused(config, message):
    with pytest.raises(CheckpointError) as info:
        read(config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable JSON file"):
        ModelConfig.from_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="not a model configuration"):
        ModelConfig.from_dir(tmp_path)
