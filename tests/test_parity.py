"""The converted files against the reference implementation (transformers + torch)."""

import random
import subprocess
import sys

import pytest

from tests.checkpoints import DART_SPECIAL_TOKENS, TINY, dart_vocab

pytest.importorskip("torch", reason="parity needs torch: pip install torch==2.13.0")
pytest.importorskip("transformers", reason="parity needs transformers")

pytestmark = pytest.mark.reference

MAX_MEAN_KL = {"f16": 1e-4, "q8_0": 0.01, "q6_k": 0.1}


@pytest.fixture(scope="module")
def parity(checkpoints, ggufs, saved_checkpoints, saved_ggufs):
    """{(form, kind, quant): Parity}: form "v4" is config.json as the 2024 repos have it, written by hand;
    "v5" is what the installed transformers' save_pretrained writes."""
    from dtg_cli.convert.verify import verify

    results = {}
    for form, directories, files in (("v4", checkpoints, ggufs), ("v5", saved_checkpoints, saved_ggufs)):
        for kind in TINY:
            for quant, result in zip(files[kind], verify(directories[kind], list(files[kind].values())), strict=False):
                results[form, kind, quant] = result
    return results


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q6_k"])
@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("form", ["v4", "v5"])
def test_logits_match_transformers(parity, form, kind, quant):
    result = parity[form, kind, quant]
    assert 55 <= result.positions <= 80
    assert result.mean_kl <= MAX_MEAN_KL[quant], result.line()
    assert result.passed, result.line()
    if quant == "f16":
        assert result.top1_agreement == 1.0, result.line()
        assert result.max_abs_logit_diff < 0.1, result.line()


def test_the_saved_checkpoints_are_in_the_transformers_5_form(saved_checkpoints):
    import json

    for kind, directory in saved_checkpoints.items():
        config = json.loads((directory / "config.json").read_text())
        assert "rope_theta" not in config and config["rope_parameters"]["rope_theta"] == TINY[kind].rope_theta
    assert not (saved_checkpoints["dantaggen"] / "tokenizer.model").exists()


def test_fixture_distributions_are_peaked(checkpoints):
    """The random weights give logits with a range of tens, so the parity thresholds mean something."""
    from dtg_cli.convert.verify import reference_logits, verification_prompt

    for kind, directory in checkpoints.items():
        logits = reference_logits(directory, verification_prompt(directory))
        spread = (logits.max(-1) - logits.min(-1)).mean()
        assert 20 < spread < 100, (kind, spread)


def test_mish_checkpoint_differs_from_its_silu_gguf(checkpoint_copy, tmp_path):
    """DanTagGen's config says mish; llama.cpp computes SiLU. --verify must show the difference, not hide it."""
    import json

    from dtg_cli.convert import convert
    from dtg_cli.convert.verify import verify

    directory = checkpoint_copy("dantaggen")
    config = json.loads((directory / "config.json").read_text())
    config["hidden_act"] = "mish"
    (directory / "config.json").write_text(json.dumps(config))
    (result,) = verify(directory, convert(directory, tmp_path / "out", "f16"))
    assert result.mean_kl > MAX_MEAN_KL["f16"]


def dart_prompts(count: int) -> list[str]:
    rng = random.Random(1234)
    vocab = dart_vocab()[103:]
    spaces = [" ", "  ", "\t", "\n", "\u3000", "\xa0", "\x1c", "\u2003", "\x85", "\u200b", ""]
    separators = [",", ", ", ",  ", ",\t", ", \n", " , ", ",,", "", ",\u3000", ",\x1c", ",\xa0"]

    def tag() -> str:
        r = rng.random()
        if r < 0.55:
            t = rng.choice(vocab)
        elif r < 0.7:
            t = rng.choice(DART_SPECIAL_TOKENS)
        elif r < 0.8:  # unknown tags, odd characters, letters whose lower case is special
            t = "".join(rng.choice("abcxyz_ ()İΣ:;^") for _ in range(rng.randint(1, 8)))
        else:
            t = rng.choice(vocab)
            t = t.upper() if rng.random() < 0.5 else t.title()
        return t.replace(" ", "_") if rng.random() < 0.1 else t

    prompts = []
    for _ in range(count):
        text = "".join(tag() + rng.choice(separators) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            text = rng.choice(spaces) + text + rng.choice(spaces)
        prompts.append(text)
    return prompts


def test_dart_tokenizer_from_the_gguf_matches_hf(checkpoints, ggufs):
    from tokenizers import Tokenizer

    from dtg_cli.wordlevel import WordLevelTokenizer

    reference = Tokenizer.from_file(str(checkpoints["dart-moe"] / "tokenizer.json"))
    ours = WordLevelTokenizer.from_gguf(ggufs["dart-moe"]["q8_0"])
    prompts = dart_prompts(500) + [
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character><|rating:general|>"
        "<|aspect_ratio:tall|><|length:long|><general>1girl, cat ears<|identity:none|><|input_end|>",
        "1girl<|identity:none|>",
        "CAT EARS,Cat_Ears ,  cat ears",
        "",
        ",,,",
    ]
    mismatches = [p for p in prompts if ours.encode(p) != reference.encode(p, add_special_tokens=False).ids]
    assert mismatches == []
    ids = reference.encode(prompts[-5]).ids
    assert ours.tokens(ids) == [reference.id_to_token(i) for i in ids]


def test_dantaggen_prompts_tokenize_in_llama_cpp_like_hf(checkpoints, ggufs):
    from transformers import AutoTokenizer

    from dtg_cli.llama import Model

    reference = AutoTokenizer.from_pretrained(str(checkpoints["dantaggen"]))
    prompts = []
    for quality in (None, "masterpiece"):
        for rating, artist, character, copyright, ratio, target, general in [
            ("safe", "", "", "", 1.0, "<|long|>", "1girl, solo"),
            ("<|empty|>", "<|empty|>", "<|empty|>", "<|empty|>", 0.6, "<|very_short|>", ""),
            ("nsfw", "wlop", "ganyu (genshin impact)", "genshin impact", 1.8, "<|very_long|>", "1girl, :d, ^^^, \\(cosplay\\)"),
            (
                "general",
                "ke-ta, kantoku",
                "hatsune miku, kagamine rin",
                "vocaloid",
                0.7,
                "<|short|>",
                "2girls, multiple girls, café, 日本語",
            ),
        ]:
            lines = [f"quality: {quality}"] if quality else []
            lines += [f"rating: {rating}", f"artist: {artist or '<|empty|>'}", f"characters: {character or '<|empty|>'}"]
            lines += [f"copyrights: {copyright or '<|empty|>'}", f"aspect ratio: {ratio:.1f}", f"target: {target}"]
            lines += [f"general: {general}<|input_end|>"]
            prompts.append("\n".join(lines))
    with Model(ggufs["dantaggen"]["q8_0"], n_gpu_layers=0) as model:
        for prompt in prompts:
            assert model.tokenize(prompt) == reference(prompt)["input_ids"], prompt


def test_quantized_models_load_and_decode_in_a_fresh_process(ggufs):
    """A crash in llama.cpp (such as the AMX one) kills the process: check in a child, so it is reported."""
    code = (
        "import sys\n"
        "from dtg_cli.llama import Context, Model\n"
        "for path in sys.argv[1:]:\n"
        "    with Model(path) as m, Context(m, n_ctx=64, n_batch=16) as c:\n"
        "        assert c.logits([0, 6, 103, 104]).shape == (4, m.n_vocab)\n"
        "print('ok')\n"
    )
    paths = [str(ggufs[kind][q]) for kind in TINY for q in ("q8_0", "q6_k")]
    done = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "kind, overrides",
    [
        ("dantaggen", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}),
        ("dart-moe", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}),
        ("dantaggen", {"tie_word_embeddings": True}),
        ("dantaggen", {"head_dim": 32}),
        ("dart-dense", {"head_dim": 128}),
        ("dantaggen", {"attention_bias": True, "mlp_bias": True}),
    ],
)
def test_settings_that_change_the_forward_pass_convert_with_parity(tmp_path, kind, overrides):
    from dtg_cli.convert import convert
    from dtg_cli.convert.verify import verify
    from tests.checkpoints import save_with_transformers

    directory = save_with_transformers(tmp_path / "ckpt", TINY[kind], seed=2, **overrides)
    (result,) = verify(directory, convert(directory, tmp_path / "out", "f16"))
    # Every position within rounding (a near tie may still swap the top token, so top-1 is not asserted).
    assert result.mean_kl <= MAX_MEAN_KL["f16"] and result.max_abs_logit_diff < 0.1, result.line()


def test_verify_fails_a_wrong_conversion_with_a_nonzero_exit(saved_checkpoints, tmp_path, monkeypatch):
    """`dtg convert --verify` on a converter that drops the rope base, as the one before rope_parameters did."""
    from typer.testing import CliRunner

    import dtg_cli.convert.config
    from dtg_cli.cli import app

    original = dtg_cli.convert.config._rope
    monkeypatch.setattr(dtg_cli.convert.config, "_rope", lambda *args: (10000.0, original(*args)[1]))
    done = CliRunner().invoke(app, ["convert", str(saved_checkpoints["dart-moe"]), "-o", str(tmp_path), "-q", "f16", "--verify"])
    assert done.exit_code == 1, done.output
    assert "FAILED" in done.output and "computes a different function" in done.output
    assert (tmp_path / "dart-moe-F16.gguf").is_file()

    monkeypatch.setattr(dtg_cli.convert.config, "_rope", original)
    done = CliRunner().invoke(app, ["convert", str(saved_checkpoints["dart-moe"]), "-o", str(tmp_path), "-q", "f16", "--verify", "--force"])
    assert done.exit_code == 0, done.output
    assert "FAILED" not in done.output and ": ok" in done.output
