"""Hostile and careless input, second round: a section per class of what was found (numbers at the edges,
regex bans, nesting, untrusted files, output targets, signals, merge, resume, batch input). Each test
fails on the code before that round; real subprocesses where the point is an exit code, a stream or a
signal."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_batch import ok, write
from tests.test_cli import assert_one_line_error, run
from tests.test_hostile import DTG, dtg, lines_of

# --- 1. numbers at the edges -------------------------------------------------------------------------


def one_json(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("extra", [[], ["--min-p", 0.5]])
def test_a_subnormal_temperature_samples_greedily(dart, extra):
    common = ["generate", "1girl", "-m", dart, "--seed", 4, "--max-new-tokens", 6, "--format", "json", *extra]
    tiny = one_json(run(*common, "--temperature", "1e-320"))
    greedy = one_json(run(*common, "--temperature", 0))
    assert [r["new_tags"] for r in tiny] == [r["new_tags"] for r in greedy] and tiny[0]["new_tags"]


def test_a_subnormal_temperature_in_a_record_loses_no_result(dart, tmp_path):
    records = [{"tags": "1girl", "temperature": 1e-320}, *({"tags": t} for t in ["solo", "cat ears", "smile", "2girls", "1boy"])]
    src = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 4, "--skip-errors"))
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--repeat-penalty", "1e-300"], "--repeat-penalty: 1e-300 must be between 0.01 and 10"),
        (["--width", str(10**300), "--height", "1"], "--width: a number of about 301 digits must be between 1 and 1000000"),
        (["--width", "5", "--height", "1" + "0" * 5000], "--height"),
        (["--temperature", "nan"], "--temperature: nan must be between 0 and 100"),
        (["--top-p", "inf"], "--top-p: inf must be in (0, 1]"),
    ],
)
def test_numbers_past_their_range_are_one_line(ggufs, args, fragment):
    result = run("generate", "1girl", "-m", ggufs["tipo"]["q8_0"], *args)
    assert_one_line_error(result, fragment)


def test_an_aspect_ratio_in_exponent_form_is_a_number(dart):
    common = ["generate", "1girl", "-m", dart, "--seed", 1, "--max-new-tokens", 3, "--format", "json"]
    assert one_json(run(*common, "--aspect-ratio", "5e-1")) == one_json(run(*common, "--aspect-ratio", "0.5"))


@pytest.mark.parametrize(
    "record, fragment",
    [
        ('{"tags": "1girl", "width": 1' + "0" * 400 + ', "height": 1}', "a number of about 401 digits must be between 1 and 1000000"),
        ('{"tags": "1girl", "seed": 1' + "0" * 400 + "}", "seed: a number of about 401 digits must be between 0 and 2**32 - 1"),
        ('{"tags": "1girl", "num": ' + "9" * 5000 + "}", "a number of more than 4300 digits"),
        ('{"tags": "1girl", "top_k": 1e999}', "top_k: inf must be an integer"),
    ],
    ids=["width", "seed", "num", "top_k"],
)
def test_numbers_past_their_range_in_a_record_are_a_bad_record(dart, tmp_path, record, fragment):
    src = write(tmp_path / "in.jsonl", '{"tags": "solo"}\n' + record + "\n")
    result = run("batch", src, "-m", dart, "--max-new-tokens", 2)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {src}:2: {fragment}" or fragment in result.stderr.strip().splitlines()[-1]
    assert len(result.stdout.splitlines()) == 1  # the good record before it


def test_a_toml_number_past_pythons_limit_is_a_bad_record(dart, tmp_path):
    src = write(tmp_path / "in.toml", '[[prompt]]\ntags = "1girl"\n\n[[prompt]]\ntags = "solo"\nnum = ' + "9" * 5000 + "\n")
    result = run("batch", src, "-m", dart, "--max-new-tokens", 2)
    assert_one_line_error_after_results(result, f"{src}:4: a number of more than 4300 digits", 1)


def assert_one_line_error_after_results(result, line, results):
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {line}"
    assert len(result.stdout.splitlines()) == results


# --- 2. regex bans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["re:^([a-z ]+)+$", "re:(a|aa)+$", "re:^(.*a){20}$"])
def test_a_backtracking_ban_never_hangs(dart, pattern):
    done = dtg("generate", "1girl", "-m", dart, "--ban", pattern, "--seed", 1, "--max-new-tokens", 4)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1


def test_a_ban_is_matched_against_a_whole_vocabulary_in_linear_time():
    import time

    from dtg_cli.tagtext import compile_bans

    banned = compile_bans(["re:^([a-z ]+)+$", "re:(x+x+)+y"])
    tags = ["a" * 40 + "!", "x" * 5000 + "!", "long hair"] * 1000
    started = time.perf_counter()
    assert [banned(t) for t in tags[:3]] == [False, False, True]
    assert sum(banned(t) for t in tags) == 1000
    assert time.perf_counter() - started < 10  # Python's re takes longer than the age of the universe here


@pytest.mark.parametrize(
    "patterns, fragment",
    [
        (["re:x{2000}"], "'re:x{2000}' is not a valid regular expression (invalid repetition size"),
        (["re:(?<=a)b"], "'re:(?<=a)b' is not a valid regular expression"),
        (["a"] * 300, "300 patterns; at most 256"),
        (["a" * 2000], "a pattern of 2000 characters; at most 1024"),
    ],
)
def test_bad_or_too_many_bans_are_one_line(dart, tmp_path, patterns, fragment):
    src = write(tmp_path / "in.jsonl", json.dumps({"tags": "1girl", "ban": patterns}) + "\n")
    result = run("batch", src, "-m", dart, "--max-new-tokens", 2)
    assert_one_line_error(result, f"{src}:1: ban: {fragment}")


def test_two_hundred_thousand_bans_in_a_record_are_refused_at_once(dart, tmp_path):
    src = write(tmp_path / "in.jsonl", json.dumps({"tags": "1girl", "ban": [f"re:^tag{i}$" for i in range(200_000)]}) + "\n")
    done = dtg("batch", src, "-m", dart, "--max-new-tokens", 2)
    assert done.returncode == 1 and "200000 patterns; at most 256" in done.stderr.decode()


# --- 3. nesting -------------------------------------------------------------------------------------

DEEP = "[" * 100_000


def test_a_deeply_nested_jsonl_record_is_a_bad_record(dart, tmp_path):
    src = write(tmp_path / "in.jsonl", '{"tags": "solo"}\n{"tags": ' + DEEP + "}\n")
    assert_one_line_error_after_results(run("batch", src, "-m", dart, "--max-new-tokens", 2), f"{src}:2: nested too deeply", 1)


def test_a_deeply_nested_toml_table_is_a_bad_record(dart, tmp_path):
    src = write(tmp_path / "in.toml", '[[prompt]]\ntags = "1girl"\n\n[[prompt]]\ntags = ' + DEEP + "\n")
    assert_one_line_error_after_results(run("batch", src, "-m", dart, "--max-new-tokens", 2), f"{src}:4: nested too deeply", 1)


def test_a_deeply_nested_line_in_a_resumed_output_or_a_merge_input_is_refused(dart, tmp_path):
    src = write(tmp_path / "in.txt", lines_of(3))
    out = tmp_path / "out.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 2))
    first = out.read_text().splitlines(keepends=True)[0]
    out.write_text(first + DEEP + "\n")
    assert_one_line_error(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 2, "--resume"), f"{out}:2: not a dtg batch record")
    assert_one_line_error(run("merge", out), f"{out}:2: not a dtg batch JSONL record")


def test_a_deeply_nested_embedded_tokenizer_is_a_model_file_error():
    from dtg_cli.errors import ModelFileError
    from dtg_cli.wordlevel import WordLevelTokenizer

    with pytest.raises(ModelFileError, match="nested too deeply"):
        WordLevelTokenizer.from_json('{"model": ' + DEEP + "}")


def test_a_deeply_nested_checkpoint_config_is_one_line(checkpoint_copy, tmp_path):
    source = checkpoint_copy("dart-moe")
    (source / "config.json").write_text('{"architectures": ' + DEEP + "}")
    assert_one_line_error(run("convert", source, "--out", tmp_path / "out"), "nested too deeply")


# --- 7. merge ---------------------------------------------------------------------------------------


def shards_of(dart, tmp_path, n=2, model=None):
    src = write(tmp_path / "in.txt", lines_of(6))
    paths = []
    for k in range(n):
        out = tmp_path / f"out.{k}.jsonl"
        ok(run("batch", src, "--shard", f"{k}/{n}", "-o", out, "-m", model or dart, "--max-new-tokens", 2))
        paths.append(out)
    return paths


def test_merge_into_one_of_its_inputs_is_refused(dart, tmp_path):
    a, b = shards_of(dart, tmp_path)
    before = a.read_bytes()
    with open(a, "ab") as append:
        done = subprocess.run([*DTG, "merge", str(a), str(b)], stdout=append, stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 2 and b"the merge's output is this input" in done.stderr
    assert a.read_bytes() == before


@pytest.mark.parametrize("how", ["process substitution", "/dev/stdin"])
def test_merge_of_a_pipe_is_refused_not_read_empty(dart, tmp_path, how):
    a, b = shards_of(dart, tmp_path)
    if how == "/dev/stdin":
        with open(a, "rb") as stdin:
            done = dtg("merge", "/dev/stdin", b, stdin=stdin)
        assert done.returncode == 0  # a file redirected to stdin is a regular file
        with open(a, "rb") as f:
            done = dtg("merge", "/dev/stdin", b, input=f.read())
    else:
        read, write_end = os.pipe()
        os.write(write_end, a.read_bytes())
        os.close(write_end)
        done = dtg("merge", f"/dev/fd/{read}", b, pass_fds=(read,))
        os.close(read)
    assert done.returncode == 2 and b"not a regular file" in done.stderr and done.stdout == b""


def test_merge_refuses_shards_of_different_models(ggufs, tmp_path):
    (a,) = shards_of(ggufs["dart-moe"]["q8_0"], tmp_path / "x", n=1) if (tmp_path / "x").mkdir() is None else ()
    (b,) = shards_of(ggufs["dart-dense"]["q8_0"], tmp_path / "y", n=1) if (tmp_path / "y").mkdir() is None else ()
    assert_one_line_error(run("merge", a, b, "--allow-gaps"), "holds results of dart-moe-Q8_0: shards of different runs")


def test_merge_as_text_refuses_a_record_without_text(dart, tmp_path):
    a, b = shards_of(dart, tmp_path)
    lines = a.read_text().splitlines()
    record = json.loads(lines[0])
    record["text"] = None
    a.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    assert_one_line_error(run("merge", a, b, "--format", "text"), f"{a}:1: not a dtg batch JSONL record")


# --- 8. resume checks every key it relies on --------------------------------------------------------


@pytest.mark.parametrize("key, value", [("variant", -1), ("variant", -5), ("line", 1e999), ("line", "1"), ("variant", True), ("line", 0)])
def test_resume_refuses_a_tampered_place(dart, tmp_path, key, value):
    src = write(tmp_path / "in.txt", lines_of(3))
    out = tmp_path / "out.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 2))
    lines = out.read_text().splitlines()
    record = json.loads(lines[1])
    record[key] = value
    tampered = "\n".join([lines[0], json.dumps(record)]) + "\n"
    out.write_text(tampered)
    result = run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 2, "--resume")
    assert_one_line_error(result, f"{out}:2: not a dtg batch record")
    assert out.read_text() == tampered


# --- 9. batch input ----------------------------------------------------------------------------------


def test_jsonl_with_a_byte_order_mark_on_stdin_is_read_as_jsonl(dart):
    records = b'\xef\xbb\xbf{"tags": "1girl", "rating": "explicit"}\n{"tags": "solo"}\n'
    done = dtg("batch", "-", "-m", dart, "--max-new-tokens", 2, "--format", "jsonl", input=records)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["input_tags"] == ["1girl"] and first["conditions"]["rating"] == "explicit" and second["input_tags"] == ["solo"]


def test_a_prompt_header_inside_a_multiline_toml_string_is_text(ggufs, tmp_path):
    caption = 'A girl.\n[[prompt]]\nStill the caption, with a quote \\""" in it.'
    src = write(tmp_path / "in.toml", f'[[prompt]]\ntags = "1girl"\nnl = """{caption}"""\n\n[[prompt]]\ntags = "solo"\n')
    out = tmp_path / "out.jsonl"
    ok(run("batch", src, "-o", out, "-m", ggufs["tipo"]["q8_0"], "--max-new-tokens", 4, "--write", "tags"))
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["nl"] == 'A girl. [[prompt]] Still the caption, with a quote """ in it.' and second["input_tags"] == ["solo"]
    assert (first["line"], second["line"]) == (1, 7)


def test_a_huge_caption_is_refused_before_it_is_tokenized(ggufs, tmp_path):
    src = write(tmp_path / "in.jsonl", json.dumps({"nl": "A girl. " * 2_000_000}) + "\n")
    done = dtg("batch", src, "-m", ggufs["tipo"]["q8_0"], "--max-new-tokens", 2)
    assert done.returncode == 1 and "nl: 16000000 characters; a text holds at most 65536" in done.stderr.decode()


# --- 5. output targets -------------------------------------------------------------------------------


def test_batch_into_dev_stdout_writes_the_results_to_stdout(dart, tmp_path):
    src = write(tmp_path / "in.txt", lines_of(3))
    done = dtg("batch", src, "-m", dart, "-o", "/dev/stdout", "--force", "--max-new-tokens", 2)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and b"1girl" not in done.stderr


def test_batch_into_dev_null_runs(dart, tmp_path):
    src = write(tmp_path / "in.txt", lines_of(3))
    done = dtg("batch", src, "-m", dart, "-o", "/dev/null", "--max-new-tokens", 2)
    assert done.returncode == 0 and b"3 records, 3 results" in done.stderr, done.stderr
    assert_one_line_error(run("batch", src, "-m", dart, "-o", "/dev/null", "--resume"), "--resume needs a regular file")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stderr_loses_no_result(dart, tmp_path):
    src = write(tmp_path / "in.txt", lines_of(4) + "unknowntagzz\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*DTG, "batch", str(src), "-m", str(dart), "--max-new-tokens", "2", "-v"], stdout=subprocess.PIPE, stderr=full, timeout=120
        )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 5


@pytest.mark.parametrize("command", [["generate", "1girl"], ["convert", "CKPT", "--out", "OUT", "--quant", "f16"]])
def test_a_closed_stdout_is_an_error_not_a_traceback(dart, checkpoints, tmp_path, command):
    args = [str(checkpoints["dart-moe"]) if a == "CKPT" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    if command[0] == "generate":
        args += ["-m", str(dart), "--max-new-tokens", "2"]
    done = subprocess.run([*DTG, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300, pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(1))  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr.decode() and done.stderr.decode().strip().splitlines()[-1] == (
        "error: stdout is closed, and dtg writes its results there; redirect it to a file or /dev/null"
    )


def test_an_ascii_terminal_gets_escapes_not_a_traceback(dart):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = dtg("generate", "1girl, café", "-m", dart, "--max-new-tokens", 2, "--seed", 1, env=env)
    assert done.returncode == 0 and done.stdout.startswith(b"1girl, caf\\xe9, ") and b"Traceback" not in done.stderr
    done = dtg("tags", "check", "café, 1girl", env=env)
    assert done.returncode == 1 and b"caf\\xe9" in done.stdout and b"Traceback" not in done.stderr


def test_a_reader_that_goes_away_is_exit_141(tmp_path):
    done = subprocess.run(f"{' '.join(DTG)} tags search '*a*' --limit 5000 | head -c 10; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 141 and done.stderr == b""


# --- 6. signals -------------------------------------------------------------------------------------


def started_pipeline(dart, *args):
    proc = subprocess.Popen(
        [*DTG, "generate", "-", "-m", str(dart), "--format", "json", "--max-new-tokens", "2", *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_first_result_leaves_an_empty_json_array(dart, signum, code):
    proc = started_pipeline(dart)
    time.sleep(2)  # waiting for its first line
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and json.loads(out) == [] and b"Traceback" not in err


def test_sigterm_after_results_closes_the_json_array(dart):
    proc = started_pipeline(dart)
    proc.stdin.write(b"1girl\n")
    proc.stdin.flush()
    first = os.read(proc.stdout.fileno(), 1)  # the array has begun: a result was written (unbuffered: communicate reads the pipe itself)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and b"terminated" in err
    (record,) = json.loads(first + out)
    assert record["input_tags"] == ["1girl"]


def test_a_signal_that_lands_in_llamas_log_callback_is_delivered_after_it():
    code = (
        "import signal, sys, time\n"
        "from dtg_cli import llama\n"
        "from dtg_cli.cli.app import on_signal\n"
        "llama.bindings()\n"
        "class Frame:\n"
        "    f_code = llama._on_log_code\n"
        "on_signal(signal.SIGINT, Frame())  # raised there, ctypes would drop it\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- 4. untrusted GGUF files -------------------------------------------------------------------------


def patched_value(path, tmp_path, key: str, kind: int, old: bytes, new: bytes):
    """A copy of a GGUF with one metadata value of type `kind` replaced by bytes of the same length."""
    import struct

    assert len(old) == len(new)
    data = bytearray(path.read_bytes())
    name = key.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    assert struct.unpack_from("<I", data, at)[0] == kind
    at += 4 + (8 if kind == 8 else 0)  # a string's length comes first
    assert bytes(data[at : at + len(old)]) == old
    data[at : at + len(old)] = new
    out = tmp_path / f"patched-{len(list(tmp_path.iterdir()))}.gguf"
    out.write_bytes(bytes(data))
    return out


def test_models_info_escapes_what_a_gguf_says(dart, tmp_path):
    forged = patched_value(dart, tmp_path, "general.name", 8, b"dart-moe", b"\x1b[1m\nfam")
    plain = dtg("models", "info", dart)
    done = dtg("models", "info", forged)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stdout and b"\\x1b[1m\\x0afam" in done.stdout
    assert len(done.stdout.splitlines()) == len(plain.stdout.splitlines())


def test_a_result_is_one_line_whatever_a_vocabulary_holds():
    import io

    from dtg_cli.outcomes import Result
    from dtg_cli.output import ResultWriter
    from dtg_cli.reading import Layout

    result = Result(model="m", prompt="p", input_ids=[], output_ids=[], tags=["a\nb", "\x1bc", "d\x9be"], new_tags=["a\nb", "\x1bc", "d\x9be"],
                    input_tags=[], seed=1, stop="eos", sampling={}, timings={}, layout=Layout())  # fmt: skip
    for kind in ("text", "jsonl"):
        out = io.BytesIO()
        ResultWriter(kind, file=out).write(result)
        written = out.getvalue()
        assert written.count(b"\n") == 1 and not any(0x80 <= b <= 0x9F and written[i - 1] == 0xC2 for i, b in enumerate(written))
        assert b"\x1b" not in written
    assert json.loads(written)["new_tags"] == ["a\nb", "\x1bc", "d\x9be"]  # JSON keeps the text, escaped


def test_a_nan_norm_epsilon_is_one_line_not_an_abort(dart, tmp_path):
    import struct

    model = patched_value(
        dart, tmp_path, "llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5), struct.pack("<f", float("nan"))
    )
    done = dtg("generate", "1girl", "-m", model)
    assert done.returncode == 1 and done.stdout == b""
    assert (
        done.stderr.decode()
        .strip()
        .splitlines()[-1]
        .endswith("layer_norm_rms_epsilon is nan; a model dtg runs has a positive value below 1")
    )


def tokenizer_spec(pattern: str) -> str:
    return json.dumps({
        "model": {"type": "WordLevel", "vocab": {"<|unk|>": 0, "a": 1, "b": 2}, "unk_token": "<|unk|>"},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": False},
        "added_tokens": [], "normalizer": None, "post_processor": None,
    })  # fmt: skip


def test_a_backtracking_pre_tokenizer_pattern_matches_in_linear_time():
    import time

    from dtg_cli.wordlevel import WordLevelTokenizer

    tokenizer = WordLevelTokenizer.from_json(tokenizer_spec("(a+)+c"))
    started = time.perf_counter()
    assert tokenizer.encode("a" * 50_000 + "b") == [0]
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("pattern", ["(", "(?<=a)b", "x{2000}"])
def test_a_pre_tokenizer_pattern_that_does_not_compile_is_a_model_file_error(pattern):
    from dtg_cli.errors import ModelFileError
    from dtg_cli.wordlevel import WordLevelTokenizer

    with pytest.raises(ModelFileError, match="Split pattern dtg cannot match"):
        WordLevelTokenizer.from_json(tokenizer_spec(pattern))


def test_a_token_id_past_the_vocabulary_is_a_model_file_error():
    from dtg_cli.errors import ModelFileError
    from dtg_cli.tokenizers import TagTokenizer

    spec = json.loads(tokenizer_spec(","))
    spec["model"]["vocab"]["far"] = 10**12
    with pytest.raises(ModelFileError, match="token id 1000000000000; the model has 30 tokens"):
        TagTokenizer(json.dumps(spec), n_vocab=30)


def test_string_lengths_a_gguf_claims_are_checked_before_anything_is_allocated(tmp_path, monkeypatch):
    import struct

    from dtg_cli import gguf_header
    from dtg_cli.errors import ModelFileError

    def gguf(*strings: bytes, claimed: int | None = None) -> bytes:
        body = b"".join(
            struct.pack("<Q", 2) + b"k%d" % i + struct.pack("<I", 8) + struct.pack("<Q", claimed or len(s)) + s
            for i, s in enumerate(strings)
        )
        return b"GGUF" + struct.pack("<IQQ", 3, 0, len(strings)) + body

    huge = tmp_path / "huge.gguf"
    huge.write_bytes(gguf(b"x", claimed=1 << 30))  # a gigabyte claimed: past what one string may hold
    with pytest.raises(ModelFileError, match="a string of 1073741824 bytes"):
        gguf_header.read_metadata(huge)
    huge.write_bytes(gguf(b"x", claimed=32 << 20))  # allowed, but past the end of the file: never allocated
    with pytest.raises(ModelFileError, match="truncated"):
        gguf_header.read_metadata(huge)
    many = tmp_path / "many.gguf"
    many.write_bytes(gguf(*[b"y" * 60] * 6))
    monkeypatch.setattr(gguf_header, "_MAX_STRINGS", 300)  # six strings of 60 bytes pass 300 in all
    with pytest.raises(ModelFileError, match="more than 300 bytes of strings"):
        gguf_header.read_metadata(many)


# --- 10. convert inputs ------------------------------------------------------------------------------


def test_a_second_convert_into_the_same_folder_refuses_instead_of_deleting_the_firsts_files(checkpoints, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        [*DTG, "convert", str(checkpoints["dart-moe"]), "--out", str(out), "--name", "a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".a-*.partial")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = dtg("convert", checkpoints["dart-moe"], "--out", out, "--name", "a")
    out_a, err_a = first.communicate(timeout=300)
    assert first.returncode == 0, err_a
    assert len(out_a.splitlines()) == 3 and all(os.path.getsize(p) > 0 for p in out_a.decode().split())
    if second.returncode != 0:  # it started while the first was writing (the usual case)
        assert b"another dtg convert is writing into" in second.stderr and second.stdout == b""


@pytest.mark.parametrize("name", ["*", "x\ny", "a/b", ".hidden", "a[1]", "x" * 300])
def test_a_model_name_that_is_no_plain_file_name_is_refused(checkpoints, tmp_path, name):
    result = run("convert", checkpoints["dart-moe"], "--out", tmp_path / "out", "--name", name, "--quant", "f16")
    assert_one_line_error(result, "invalid model name")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("num_hidden_layers", 1_000_000, "num_hidden_layers must be at most 1024 for a model dtg runs, got 1000000"),
        ("max_position_embeddings", 2**40, "max_position_embeddings must be at most 1048576"),
        ("rms_norm_eps", 10**400, "rms_norm_eps must be a number, got 1000"),
        ("rms_norm_eps", -1, "rms_norm_eps must be a number between 0 and 1, got -1"),
        ("vocab_size", 10**9, "vocab_size must be at most 1048576"),
    ],
)
def test_config_values_are_bounded_like_a_ggufs(checkpoint_copy, tmp_path, key, value, fragment):
    source = checkpoint_copy("dart-moe")
    config = json.loads((source / "config.json").read_text())
    config[key] = value
    (source / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    assert_one_line_error(run("convert", source, "--out", tmp_path / "out", "--quant", "f16"), fragment)
    assert time.monotonic() - started < 30


def rewrite_safetensors_header(path, change):
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h[next(k for k in h if k != "__metadata__")].update(data_offsets=["0", "8"]),
        lambda h: h[next(k for k in h if k != "__metadata__")].update(shape=[2.5, 4]),
        lambda h: h[next(k for k in h if k != "__metadata__")].update(shape=[True]),
    ],
    ids=["string offsets", "float shape", "bool shape"],
)
def test_a_safetensors_header_of_the_wrong_types_is_one_line(checkpoint_copy, tmp_path, change):
    source = checkpoint_copy("dart-moe")
    rewrite_safetensors_header(source / "model.safetensors", change)
    assert_one_line_error(run("convert", source, "--out", tmp_path / "out", "--quant", "f16"), "corrupt safetensors header entry")


def test_a_weight_map_that_leads_out_of_the_checkpoint_is_refused(checkpoint_copy, tmp_path):
    source = checkpoint_copy("dart-moe")
    (source / "model.safetensors").rename(source / "model-00001-of-00001.safetensors")
    weight_map = {"model.embed_tokens.weight": "../../../../etc/passwd", "lm_head.weight": "model-00001-of-00001.safetensors"}
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_one_line_error(
        run("convert", source, "--out", tmp_path / "out", "--quant", "f16"), "names '../../../../etc/passwd', which is not a file name"
    )
