import json
import sys

import gguf
import pytest
from typer.testing import CliRunner

from dtg_cli.cli import app
from tests.hubcache import fill_hub_cache

runner = CliRunner()


def run(*args, input=None):
    """The CLI in-process, arguments as strings."""
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    # progress lines may come first; the error is the last line, the only one, with no traceback
    assert lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]
    assert result.stdout == ""


def no_gguf(directory):
    return not directory.exists() or not [p for p in directory.iterdir() if ".gguf" in p.name]


def test_help_lists_convert():
    result = run("--help")
    assert result.exit_code == 0 and "convert" in result.stdout
    assert "--quant" in run("convert", "--help").stdout


def test_help_does_not_import_llama_cpp():
    import subprocess

    code = "import sys; from dtg_cli.cli import main; sys.argv=['dtg','--help']\ntry: main()\nexcept SystemExit: pass\nprint('llama_cpp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().endswith("False")


def in_a_new_process(*args) -> tuple[str, set[str]]:
    """stdout of `dtg ARGS` run in a new Python process (stdout a pipe), and the top-level modules it imported."""
    import subprocess

    code = (
        f"import json, sys\nfrom dtg_cli.cli import main\nsys.argv = ['dtg', *{[str(a) for a in args]!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_generate_into_a_pipe_loads_no_terminal_ui(dart):
    """rich (about 40 ms to import) is for terminals: results into a pipe, and nothing on stderr, need none of it."""
    out, modules = in_a_new_process("generate", "1girl", "-m", dart, "--seed", 3, "--threads", 1)
    assert out.startswith("1girl") and "llama_cpp" in modules and "rich" not in modules


def test_convert_prints_the_written_paths(checkpoints, tmp_path):
    result = run("convert", checkpoints["dart-moe"], "--out", tmp_path, "--quant", "f16,q6_k", "--name", "dart")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "dart-F16.gguf"), str(tmp_path / "dart-Q6_K.gguf")]
    assert "quantizing to Q6_K" in result.stderr


def test_directory_without_config(tmp_path):
    (tmp_path / "ckpt").mkdir()
    result = run("convert", tmp_path / "ckpt", "--out", tmp_path / "out")
    assert_one_line_error(result, "no config.json")
    assert no_gguf(tmp_path / "out")


def test_unsupported_architecture_is_named_with_the_supported_ones(checkpoint_copy, tmp_path):
    directory = checkpoint_copy("dart-dense")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (directory / "config.json").write_text(json.dumps(config))
    result = run("convert", directory, "--out", tmp_path / "out")
    assert_one_line_error(result, "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")
    assert no_gguf(tmp_path / "out")


@pytest.mark.parametrize("kind,files", [("dart-moe", ["tokenizer.json"]), ("dantaggen", ["tokenizer.model"])])
def test_missing_tokenizer(checkpoint_copy, tmp_path, kind, files):
    directory = checkpoint_copy(kind)
    for name in files:
        (directory / name).unlink()
    result = run("convert", directory, "--out", tmp_path / "out")
    assert_one_line_error(result, "tokenizer")
    assert no_gguf(tmp_path / "out")


@pytest.mark.parametrize(
    "kind,name,content",
    [
        ("dart-moe", "tokenizer.json", b'{"model": {"type": "WordLevel", "vocab": {'),
        ("dart-moe", "tokenizer.json", b"\xff\xfe not utf-8"),
        ("dantaggen", "tokenizer.model", b"\x0a\xff\xff\xff\xff\x0f broken"),
    ],
)
def test_unreadable_tokenizer(checkpoint_copy, tmp_path, kind, name, content):
    directory = checkpoint_copy(kind)
    (directory / name).write_bytes(content)
    result = run("convert", directory, "--out", tmp_path / "out")
    assert_one_line_error(result, name)
    assert no_gguf(tmp_path / "out")


@pytest.mark.parametrize(
    "kind, name, edit, fragment",
    [
        ("dart-moe", "config.json", lambda text: "{not json", "not a readable JSON file"),
        (
            "dart-moe",
            "config.json",
            lambda text: text.replace('"rope_theta": 1000.0', '"rope_theta": "fast"'),
            'rope_theta must be a number, got "fast"',
        ),
        (
            "dart-dense",
            "config.json",
            lambda text: text.replace('"rope_theta": 1000.0', '"rope_scaling": {"type": "su", "factor": 2}'),
            "rope_scaling.type 'su' is not supported",
        ),
        (
            "dantaggen",
            "config.json",
            lambda text: text.replace('"rope_scaling": null', '"rope_scaling": {"rope_type": "warp"}'),
            "rope_scaling.rope_type 'warp'",
        ),
        ("dart-moe", "tokenizer.json", lambda text: '{"model": 5}', "found model 5; dtg needs a WordLevel tokenizer"),
        ("dart-moe", "tokenizer.json", lambda text: '{"model": {"type": "Unigram", "vocab": []}}', "found a Unigram model"),
    ],
)
def test_bad_config_or_tokenizer_is_one_line_and_leaves_no_gguf(checkpoint_copy, tmp_path, kind, name, edit, fragment):
    directory = checkpoint_copy(kind)
    (directory / name).write_text(edit((directory / name).read_text()))
    result = run("convert", directory, "--out", tmp_path / "out")
    assert_one_line_error(result, fragment)
    assert result.exit_code == 1
    assert no_gguf(tmp_path / "out") and not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial")]


def test_truncated_safetensors(checkpoint_copy, tmp_path):
    directory = checkpoint_copy("dart-moe")
    weights = directory / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    result = run("convert", directory, "--out", tmp_path / "out")
    assert_one_line_error(result, "truncated", "download it again")
    assert no_gguf(tmp_path / "out")


def test_unknown_quant(checkpoints, tmp_path):
    result = run("convert", checkpoints["dart-moe"], "--out", tmp_path / "out", "--quant", "f16,q4_0")
    assert_one_line_error(result, "q4_0", "f16, q8_0, q6_k")
    assert no_gguf(tmp_path / "out")


def test_output_directory_that_cannot_be_written(checkpoints, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run("convert", checkpoints["dart-moe"], "--out", blocker / "out")
    assert_one_line_error(result, "cannot write to output directory")


def test_not_a_directory_nor_a_repo_id(tmp_path):
    assert_one_line_error(run("convert", tmp_path / "missing" / "dir", "--out", tmp_path), "not a checkpoint directory")


def test_debug_variable_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("DTG_DEBUG", "1")
    (tmp_path / "ckpt").mkdir()
    result = run("convert", tmp_path / "ckpt", "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "CheckpointError"


def test_hub_repo_id_from_the_offline_cache(checkpoints, tmp_path):
    commit = fill_hub_cache("p1atdev/dart-v2-moe-sft", checkpoints["dart-moe"])
    result = run("convert", "p1atdev/dart-v2-moe-sft", "--out", tmp_path / "out", "--quant", "q8_0")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out" / "dart-v2-moe-sft-Q8_0.gguf")
    kv = {f.name: f.contents() for f in gguf.GGUFReader(result.stdout.strip()).fields.values()}
    assert kv["dtg.source.repo"] == "p1atdev/dart-v2-moe-sft"
    assert kv["dtg.source.revision"] == commit
    assert kv["general.source.repo_url"] == "https://huggingface.co/p1atdev/dart-v2-moe-sft"
    assert kv["general.name"] == "dart-v2-moe-sft"


def test_hub_repo_missing_from_the_offline_cache(tmp_path):
    result = run("convert", "p1atdev/dart-v2-sft", "--out", tmp_path / "out")
    assert_one_line_error(result, "not in the Hugging Face cache", "HF_HUB_OFFLINE")


def test_verify_without_transformers_says_how_to_install(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    result = run("convert", checkpoints["dart-dense"], "--out", tmp_path / "out", "--verify")
    assert_one_line_error(result, "pip install", "torch")
    assert no_gguf(tmp_path / "out")


@pytest.mark.reference
def test_verify_prints_figures_per_file(checkpoints, tmp_path):
    pytest.importorskip("transformers")
    result = run("convert", checkpoints["dart-dense"], "--out", tmp_path, "--quant", "f16,q8_0", "--verify")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "mean KL" in line]
    assert [line.split(":")[0] for line in lines] == ["dart-dense-F16.gguf", "dart-dense-Q8_0.gguf"]
    assert all("top-1 agreement" in line and "max |logit diff|" in line for line in lines)


def test_the_usage_error_class_is_clicks_base_of_bad_flags():
    """`app._USAGE_ERROR` is read from Typer's public BadParameter; every parsing error derives from it."""
    from dtg_cli.cli.app import _USAGE_ERROR

    assert _USAGE_ERROR.__name__ == "UsageError"
    result = run("generate", "--no-such-flag")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: No such option: --no-such-flag") and line.endswith("generate --help)")
