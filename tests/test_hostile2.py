"""Hostile and careless input, second round: a section per class of what was found (numbers at the edges,
regex bans, nesting, untrusted files, output targets, signals, merge, resume, batch input). Each test
fails on the code before that round; real subprocesses where the point is an exit code, a stream or a
signal."""

import json
import os
import subprocess

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
