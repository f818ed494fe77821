"""`dtg generate` and `dtg models` through CliRunner: every option, pipelines, the model cache, the hub
cache offline, and every bad input."""

import json
import os

import pytest

from tests.hubcache import fill_hub_cache
from tests.test_cli import assert_one_line_error, run

DART_SFT_REVISION = "167fdb177a6d68e2d4adca0be5f05d21f74e4d41"


def records(result):
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_text_output_is_one_clean_line(dart):
    result = run("generate", "1girl, cat_ears", "-m", dart, "--seed", 1, "--max-new-tokens", 12)
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    tags = line.split(", ")
    assert tags[:2] == ["1girl", "cat ears"] and len(tags) > 2
    assert "<|" not in line and result.stderr == ""  # no llama.cpp log, no special tokens


# The keys of a result record, as docs/generate.md documents them; dtg batch writes the same after its own four.
RESULT_KEYS = [
    "seed", "model", "conditions", "sampling", "input_tags", "new_tags", "tags", "text", "nl", "stop",
    "prompt", "input_ids", "output_ids", "continuations", "steps",
]  # fmt: skip


def test_generate_and_batch_write_the_same_record(dart, tmp_path):
    g = records(run("generate", "1girl, solo", "-m", dart, "--seed", 5, "--max-new-tokens", 8, "--format", "jsonl"))
    (tmp_path / "in.jsonl").write_text('{"tags": "1girl, solo", "seed": 5}\n')
    batch = run("batch", str(tmp_path / "in.jsonl"), "-m", dart, "--max-new-tokens", 8, "--format", "jsonl")
    assert batch.exit_code == 0, batch.stderr
    b = json.loads(batch.stdout)
    assert list(b) == ["id", "record", "line", "variant", *RESULT_KEYS]
    assert {k: b[k] for k in RESULT_KEYS} == g


def test_json_has_the_documented_fields(dart):
    (r,) = records(run("generate", "1girl", "-m", dart, "--seed", 5, "--max-new-tokens", 8, "--format", "json"))
    assert list(r) == RESULT_KEYS
    assert r["seed"] == 5 and r["prompt"].startswith("<|bos|><copyright>") and r["input_ids"][0] == 0
    assert r["tags"] == ["1girl", *r["new_tags"]] and r["text"] == ", ".join(r["tags"])
    assert r["sampling"] == {"temperature": 1.0, "top_p": 1.0, "top_k": 100, "min_p": 0.0, "max_new_tokens": 8, "repeat_penalty": 1.0}


def test_same_options_same_output_and_text_matches_json(dart):
    args = ["generate", "1girl, solo", "-m", dart, "--seed", 9, "--max-new-tokens", 16, "--temperature", 0.8, "--top-k", 40]
    first, second = run(*args), run(*args)
    assert first.stdout == second.stdout
    (r,) = records(run(*args, "--format", "json"))
    assert first.stdout.strip() == ", ".join(r["tags"])


def test_num_gives_variants_with_consecutive_seeds(dart):
    rs = records(run("generate", "1girl", "-m", dart, "-n", 3, "--seed", 40, "--max-new-tokens", 6, "--format", "json"))
    assert [r["seed"] for r in rs] == [40, 41, 42]
    lines = run("generate", "1girl", "-m", dart, "-n", 3, "--seed", 40, "--max-new-tokens", 6).stdout.splitlines()
    assert lines == [", ".join(r["tags"]) for r in rs]


def test_jsonl(dart):
    result = run("generate", "1girl", "-m", dart, "-n", 2, "--seed", 1, "--max-new-tokens", 4, "--format", "jsonl")
    assert [json.loads(line)["seed"] for line in result.stdout.splitlines()] == [1, 2]


def test_random_seed_shown_with_verbose(dart):
    result = run("generate", "1girl", "-m", dart, "--max-new-tokens", 4, "-v")
    assert result.exit_code == 0
    assert "info: seed " in result.stderr and "tokens/s" in result.stderr


def test_pipeline_one_output_line_per_input_line_in_order(dart):
    prompts = ["1girl, cat ears", "", "2girls, multiple girls", "solo"]
    result = run("generate", "-m", dart, "--seed", 3, "--max-new-tokens", 6, input="\n".join(prompts) + "\n")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("1girl, cat ears, ") and lines[2].startswith("2girls, multiple girls, ")
    singles = [run("generate", p, "-m", dart, "--seed", 3, "--max-new-tokens", 6).stdout.strip() for p in prompts]
    assert lines == singles
    dash = run("generate", "-", "-m", dart, "--seed", 3, "--max-new-tokens", 6, input="solo\n")
    assert dash.stdout.strip() == singles[3]


def test_escape(dart):
    (r,) = records(
        run("generate", "hatsune miku (cosplay)", "-m", dart, "--seed", 1, "--max-new-tokens", 2, "--format", "json", "--escape")
    )
    assert r["tags"][0] == r"hatsune miku \(cosplay\)"
    text = run("generate", "hatsune miku (cosplay)", "-m", dart, "--seed", 1, "--max-new-tokens", 2, "--escape").stdout
    assert text.startswith(r"hatsune miku \(cosplay\)")


def test_ban(dart):
    rs = records(
        run(
            "generate",
            "1girl",
            "-m",
            dart,
            "-n",
            4,
            "--seed",
            1,
            "--max-new-tokens",
            40,
            "--ban",
            "*hair*",
            "--ban",
            "re:^(black|white)",
            "--format",
            "json",
        )
    )
    new = [t for r in rs for t in r["new_tags"]]
    assert new and not [t for t in new if "hair" in t or t.startswith(("black", "white"))]


def test_every_condition_reaches_the_prompt(dart, dtg):
    (r,) = records(run(
        "generate", "1girl", "-m", dart, "--copyright", "vocaloid", "--character", "hatsune miku", "--rating", "explicit",
        "--width", 1216, "--height", 832, "--length", "short", "--identity", "strict", "--top-p", 0.9, "--min-p", 0.05,
        "--max-new-tokens", 3, "--seed", 1, "--threads", 1, "--n-gpu-layers", 0, "--format", "json",
    ))  # fmt: skip
    assert r["prompt"] == (
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character><|rating:explicit|>"
        "<|aspect_ratio:wide|><|length:short|><general>1girl<|identity:strict|><|input_end|>"
    )
    assert r["tags"][:3] == ["hatsune miku", "vocaloid", "1girl"]
    assert r["sampling"]["top_p"] == 0.9 and r["sampling"]["min_p"] == 0.05
    (r,) = records(run(
        "generate", "1girl", "-m", dtg, "--prompt-format", "dantaggen-delta", "--artist", "wlop", "--quality", "masterpiece",
        "--aspect-ratio", "square", "--rating", "sensitive", "--length", "very_short", "--max-new-tokens", 3, "--seed", 1, "--format", "json",
    ))  # fmt: skip
    assert r["prompt"].splitlines()[:3] == ["quality: masterpiece", "rating: sensitive", "artist: wlop"]
    assert r["sampling"]["temperature"] == 1.35  # DanTagGen's default


def test_prompt_format_is_detected_from_the_source_repo(checkpoints, tmp_path):
    from dtg_cli.convert import convert

    fill_hub_cache("p1atdev/dart-v2-moe-base", checkpoints["dart-moe"])
    (path,) = convert("p1atdev/dart-v2-moe-base", tmp_path, ["f16"])
    (r,) = records(run("generate", "solo, 1girl", "-m", path, "--max-new-tokens", 2, "--format", "json"))
    assert r["prompt"].endswith("<general>1girl, solo")  # the base format: sorted, no <|input_end|>


# --- the model cache and the hub cache ------------------------------------------------------------


def test_dart_is_downloaded_and_converted_once_on_first_use(checkpoints, dtg_home):
    fill_hub_cache("p1atdev/dart-v2-moe-sft", checkpoints["dart-moe"], commit=DART_SFT_REVISION)
    first = run("generate", "1girl", "--seed", 1, "--max-new-tokens", 5)
    assert first.exit_code == 0, first.stderr
    assert "downloading p1atdev/dart-v2-moe-sft from Hugging Face and converting it to Q8_0" in first.stderr
    path = dtg_home / "models" / "dart-v2-moe-sft-Q8_0.gguf"
    assert path.is_file() and not [p for p in path.parent.iterdir() if "F16" in p.name or "partial" in p.name]
    second = run("generate", "1girl", "--seed", 1, "--max-new-tokens", 5)
    assert second.stdout == first.stdout and second.stderr == ""
    info = run("models", "info", "dart-v2-moe-sft", "--format", "json")
    file = json.loads(info.stdout)["file"]
    assert file["source_repo"] == "p1atdev/dart-v2-moe-sft" and file["source_revision"] == DART_SFT_REVISION
    assert file["quant"] == "Q8_0" and file["architecture"] == "llama" and file["experts"] == 4 and file["family"] == "dart-v2"


def test_dantaggen_gguf_comes_from_the_hub_cache(ggufs):
    fill_hub_cache("KBlueLeaf/DanTagGen-delta-rev2", {"ggml-model-Q6_K.gguf": ggufs["dantaggen"]["q6_k"]})
    result = run("generate", "1girl", "-m", "dantaggen-delta-rev2", "-q", "q6_k", "--seed", 1, "--max-new-tokens", 5, "--format", "json")
    (r,) = records(result)
    assert r["model"] == "dantaggen-delta-rev2" and r["prompt"].startswith("quality: <|empty|>\n")
    listing = json.loads(run("models", "list", "--format", "json").stdout)
    assert {m["name"]: m["on_disk"] for m in listing}["dantaggen-delta-rev2"] == ["q6_k"]


def test_nothing_cached_offline_says_what_to_download():
    result = run("generate", "1girl", "-m", "dantaggen-gamma")
    assert_one_line_error(
        result,
        "ggml-model-Q8_0.gguf of KBlueLeaf/DanTagGen-gamma",
        "HF_HUB_OFFLINE",
        "hf download KBlueLeaf/DanTagGen-gamma ggml-model-Q8_0.gguf",
    )
    result = run("generate", "1girl")
    assert_one_line_error(result, "p1atdev/dart-v2-moe-sft is not in the Hugging Face cache", f"--revision {DART_SFT_REVISION}")


@pytest.fixture
def network_down(monkeypatch):
    """Not offline, but the hub's host name does not resolve and no proxy is set. Returns the host names
    looked up: a request huggingface_hub makes (and retries) looks its host up too."""
    import socket

    from huggingface_hub import constants

    from dtg_cli import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    for name in hub._PROXIES:
        monkeypatch.delenv(name, raising=False)
    looked_up = []

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_network_down_is_one_line_at_once_and_the_cache_still_serves(network_down, checkpoints, dtg_home):
    """With the network down, huggingface_hub would retry each request for half a minute, a warning line a
    retry; dtg asks it for cached files only, so a missing model is one line and a cached one still works."""
    missing = run("generate", "1girl", "-m", "dantaggen-gamma")
    assert_one_line_error(missing, "ggml-model-Q8_0.gguf of KBlueLeaf/DanTagGen-gamma is not in the Hugging Face cache")
    assert network_down == ["hub.invalid"]  # dtg's own look-up; no request followed
    fill_hub_cache("p1atdev/dart-v2-moe-sft", checkpoints["dart-moe"], commit=DART_SFT_REVISION)
    cached = run("generate", "1girl", "--seed", 1, "--max-new-tokens", 5)
    assert cached.exit_code == 0, cached.stderr
    assert (dtg_home / "models" / "dart-v2-moe-sft-Q8_0.gguf").is_file() and network_down == ["hub.invalid"] * 2


def test_models_pull_list_info_rm(checkpoints, ggufs, dtg_home):
    fill_hub_cache("p1atdev/dart-v2-sft", checkpoints["dart-dense"], commit="df62d486a9308fde0b4ddbf23742a18f7bc0b8e6")
    pulled = run("models", "pull", "dart-v2-sft", "--quant", "q6_k,f16")
    assert pulled.exit_code == 0, pulled.stderr
    assert pulled.stdout.splitlines() == [
        str(dtg_home / "models" / "dart-v2-sft-Q6_K.gguf"),
        str(dtg_home / "models" / "dart-v2-sft-F16.gguf"),
    ]
    listing = run("models", "list")
    row = next(line for line in listing.stdout.splitlines() if line.startswith("dart-v2-sft "))
    assert "F16, Q6_K" in row and "114M" in row and "see model card" in row
    assert "apache-2.0" in next(line for line in listing.stdout.splitlines() if line.startswith("dart-v2-moe-sft "))
    info = run("models", "info", "dart-v2-sft", "-q", "q6_k")
    assert "quant: Q6_K" in info.stdout and "layers: 2" in info.stdout and "vocabulary: 30649" in info.stdout
    removed = run("models", "rm", "dart-v2-sft", "--quant", "q6_k")
    assert removed.stdout.strip() == str(dtg_home / "models" / "dart-v2-sft-Q6_K.gguf")
    assert "stays in the Hugging Face cache" in removed.stderr
    assert "not on disk" in run("models", "info", "dart-v2-sft", "-q", "q6_k").stdout
    assert_one_line_error(run("models", "rm", "dart-v2-sft", "--quant", "q6_k"), "no file of dart-v2-sft")
    # a DanTagGen file is removed from the hub cache, blob included
    from huggingface_hub import constants

    fill_hub_cache("KBlueLeaf/DanTagGen-beta", {"ggml-model-Q8_0.gguf": ggufs["dantaggen"]["q8_0"]})
    assert run("models", "rm", "dantaggen-beta").exit_code == 0
    blobs = list((__import__("pathlib").Path(constants.HF_HUB_CACHE) / "models--KBlueLeaf--DanTagGen-beta" / "blobs").iterdir())
    assert blobs == []


def test_models_info_of_a_file(dtg):
    info = json.loads(run("models", "info", dtg, "--format", "json").stdout)["file"]
    assert info["vocabulary"] == 32006 and info["tokenizer"] == "llama" and info["quant"] == "Q8_0"
    assert info["family"] == "dantaggen"


def test_dtg_home_default_is_the_user_cache(monkeypatch, tmp_path):
    from dtg_cli.home import dtg_home

    monkeypatch.delenv("DTG_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.name == "posix" and __import__("sys").platform != "darwin":
        assert dtg_home() == tmp_path / "dtg"


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["-m", "dart-v3"], ["unknown model 'dart-v3'", "dart-v2-moe-sft"]),
        (["--rating", "safe"], ["--rating", "sfw, general"]),
        (["--length", "medium-long"], ["--length"]),
        (["--aspect-ratio", "portrait"], ["--aspect-ratio"]),
        (["--temperature", "hot"], ["--temperature"]),
        (["--temperature", "-1"], ["--temperature"]),
        (["--top-p", "1.5"], ["--top-p"]),
        (["--seed", "-3"], ["--seed"]),
        (["-n", "0"], ["--num"]),
        (["--format", "xml"], ["--format", "text, json, jsonl"]),
        (["--quant", "q4_0"], ["--quant", "f16, q8_0, q6_k"]),
        (["--prompt-format", "chatml"], ["--prompt-format"]),
        (["--ban", "re:[unclosed"], ["--ban", "regular expression"]),
        (["--width", "832"], ["--width and --height"]),
        (["--artist", "wlop"], ["--artist is not used by dart-v2-moe-sft", "dantaggen-delta-rev2"]),
        (["-m", "dantaggen-beta", "--quality", "masterpiece"], ["--quality is not used by dantaggen-beta", "dantaggen-delta"]),
        (["-m", "dantaggen-delta", "--identity", "strict"], ["--identity is not used", "dart-v2-moe-sft, dart-v2-sft"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_flags_fail_before_any_download(args, fragments):
    assert_one_line_error(run("generate", "1girl", *args), *fragments)


def test_corrupt_and_missing_gguf(dart, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(dart.read_bytes()[: dart.stat().st_size // 3])
    assert_one_line_error(run("generate", "1girl", "-m", broken), "could not load this GGUF")
    assert_one_line_error(run("models", "info", broken), "broken.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    assert_one_line_error(run("generate", "1girl", "-m", junk), "junk.gguf")
    assert_one_line_error(run("generate", "1girl", "-m", tmp_path / "missing.gguf"), "no such model file")


def test_prompt_format_of_the_other_family(dart, dtg):
    assert_one_line_error(
        run("generate", "1girl", "-m", dart, "--prompt-format", "dantaggen"), "dart-v2 vocabulary", "dart-v2-sft, dart-v2-base"
    )
    assert_one_line_error(run("generate", "1girl", "-m", dtg, "--prompt-format", "dart-v2-sft"), "dantaggen vocabulary")


def test_a_failure_before_any_result_writes_nothing(dart):
    assert_one_line_error(run("generate", "1girl", "-m", dart, "--max-new-tokens", 2000, "--format", "json"), "takes at most 1024")


def test_empty_stdin(dart):
    assert_one_line_error(run("generate", "-m", dart, input=""), "no input")


def test_models_bad_input():
    assert_one_line_error(run("models", "pull", "nope"), "unknown model")
    assert_one_line_error(run("models", "info", "dantaggen-delta", "-q", "q5"), "--quant")
    assert_one_line_error(run("models", "rm", "dantaggen-alpha"), "no file of dantaggen-alpha")
    assert_one_line_error(run("models", "list", "--format", "yaml"), "--format")


def test_a_real_process_keeps_stdout_and_stderr_clean(dart):
    """llama.cpp logs through C's stderr, which CliRunner cannot see: check a real process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "dtg_cli", "generate", "-m", str(dart), "--seed", "2", "--max-new-tokens", "5"],
        input="1girl\nsolo\n", capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""
    assert [line.split(", ")[0] for line in done.stdout.splitlines()] == ["1girl", "solo"]


def test_tags_stream_live_on_a_terminal(dart, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats the output as a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    live = run("generate", "1girl", "-m", dart, "--seed", 4, "--max-new-tokens", 8, "-n", 2)
    monkeypatch.delenv("TTY_COMPATIBLE")
    plain = run("generate", "1girl", "-m", dart, "--seed", 4, "--max-new-tokens", 8, "-n", 2)
    assert live.exit_code == 0 and live.stdout == plain.stdout


def test_ctrl_c_keeps_what_was_written(dart, monkeypatch):
    """Results already written stay, and a JSON array is closed, when the user interrupts."""
    from dtg_cli.engine import Generator

    original = Generator.generate

    def interrupted_after_one(self, request, stream=None, parallel=None):
        results = original(self, request, stream, parallel)
        yield next(results)
        raise KeyboardInterrupt

    monkeypatch.setattr(Generator, "generate", interrupted_after_one)
    result = run("generate", "1girl", "-m", dart, "-n", 3, "--seed", 1, "--max-new-tokens", 3, "--format", "json")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert [r["seed"] for r in json.loads(result.stdout)] == [1]


def test_a_pipeline_that_waits_for_each_answer_gets_it(dart):
    """A program that writes a prompt and waits for its line before writing the next (a chat-like loop)
    gets each answer while dtg waits for more input: finished results are handed on before the scheduler
    blocks for the next line."""
    import select
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "dtg_cli", "generate", "-", "-m", str(dart), "--max-new-tokens", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for tags in ("1girl", "solo", "cat ears"):
            proc.stdin.write(f"{tags}\n".encode())
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "no answer while dtg waits for the next line"
            assert proc.stdout.readline().decode().startswith(tags + ", ")
    finally:
        proc.kill()
        proc.communicate()
