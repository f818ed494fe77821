"""`dtg batch` and `dtg merge`: input formats, settings layers, order, seeds, resume, bad records, shards."""

import json
import signal
import subprocess
import sys
import time

import pytest

from dtg_cli.batch import derive_seed
from tests.test_cli import assert_one_line_error, run

PROMPTS = ["1girl, solo", "cat ears", "long hair, smile", "no humans, scenery", "2girls, hug", "1boy", "flower", "night, sky"]


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_input_one_line_per_result_in_order(dart, tmp_path):
    src = write(tmp_path / "p.txt", "# prompts\n1girl, solo\n\ncat ears\n  # indented comment\nlong hair\n")
    result = ok(run("batch", src, "-m", dart, "--max-new-tokens", 6, "-n", 2))
    lines = result.stdout.splitlines()
    assert [line.split(", ")[0] for line in lines] == ["1girl", "1girl", "cat ears", "cat ears", "long hair", "long hair"]
    assert "3 records, 6 results" in result.stderr and "base seed 0" in result.stderr


@pytest.mark.parametrize("kind", ["dart-moe", "dantaggen"])
def test_batch_files_give_the_same_output_at_any_parallel(ggufs, kind, tmp_path):
    """What docs/determinism.md states: with Q8_0 on a CPU, any --parallel from 2 up gives the same output, whatever
    is decoded beside a record. The ratings change from record to record, so that the shared prompt head
    changes too, and the records are also run in reverse order."""
    ratings = ["general", "sensitive", "general", "explicit"]
    records = [{"id": f"r{i}", "tags": tags, "rating": ratings[i * 3 // 4 % 4]} for i, tags in enumerate(PROMPTS)]
    forward = write(tmp_path / "forward.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    backward = write(tmp_path / "backward.jsonl", "".join(json.dumps(r) + "\n" for r in reversed(records)))
    model = ggufs[kind]["q8_0"]
    results = {}
    for parallel, src in ((2, forward), (3, backward), (16, forward), (5, backward)):
        out = tmp_path / f"out{parallel}.jsonl"
        ok(run("batch", src, "-o", out, "-m", model, "--max-new-tokens", 24, "-n", 2, "--parallel", parallel, "--seed", 5))
        results[parallel] = {(r.pop("id"), r.pop("variant")): r for r in jsonl(out) if r.pop("line") and r.pop("record") is not None}
        assert len(results[parallel]) == 16
    assert results[2] == results[3] == results[16] == results[5]
    assert len({tuple(r["new_tags"]) for r in results[2].values()}) > 8


def test_a_short_input_gets_a_context_for_what_it_holds(dart, tmp_path):
    """Without --parallel, an input that ends before the default number of sequences is reached gets a
    context for its results (at least two sequences), with the same results as a larger context."""
    sized = {}
    for records, num in ((["1girl", "cat ears", "long hair"], 1), (["1girl"], 1), (["1girl", "cat ears"], 3)):
        src = write(tmp_path / "short.txt", "\n".join(records) + "\n")
        result = ok(run("batch", src, "-m", dart, "--max-new-tokens", 8, "-n", num, "--seed", 3, "-v"))
        wide = ok(run("batch", src, "-m", dart, "--max-new-tokens", 8, "-n", num, "--seed", 3, "--parallel", 16))
        assert result.stdout == wide.stdout
        sized[(len(records), num)] = next(line.split()[1] for line in result.stderr.splitlines() if "sequences per decode" in line)
    assert sized == {(3, 1): "3", (1, 1): "2", (2, 3): "6"}


@pytest.mark.parametrize("kind,prompt_format", [("dart-moe", "dart-v2-sft"), ("dantaggen", "dantaggen-delta")])
def test_every_decode_has_a_shape_that_does_not_depend_on_the_neighbours(ggufs, kind, prompt_format, monkeypatch):
    """The rules that keep results independent of --parallel on full-size models (whose kernels the tiny
    test models do not reach): only a shared prompt head is decoded alone, in the holder sequence; every
    other decode is one token for each of the sequences 0..k-1 (llama.cpp puts only consecutive sequence
    ids in one micro-batch), at least two, prompt tokens included, and never with exactly one row asking
    for logits (a one-row output layer uses other kernels)."""
    from dtg_cli import llama
    from dtg_cli.engine import Generator, Task
    from dtg_cli.settings import Request, Sampling

    decodes = []
    real = llama.Context.decode_many
    monkeypatch.setattr(llama.Context, "decode_many", lambda self, rows: decodes.append(rows) or real(self, rows))
    ratings = ["general", "sensitive", "explicit"]
    tasks = [
        Task(Request.from_options(tags, rating=ratings[i % 3], num=2, sampling=Sampling(max_new_tokens=4 + 3 * (i % 5))), seeds=(i, i + 1))
        for i, tags in enumerate(PROMPTS * 2)
    ]  # fmt: skip
    with Generator(ggufs[kind]["q8_0"], prompt_format=prompt_format) as generator:
        generator.unknown.warn = False
        outcomes = list(generator.run(tasks, parallel=5))
        holder = generator.context.n_seq_max - 1
    assert len(outcomes) == 32 and all(o.result for o in outcomes)
    heads = [rows for rows in decodes if rows[0][0] == holder]
    steps = [rows for rows in decodes if rows[0][0] != holder]
    assert len(heads) >= 3 and all(len(rows) == 1 and not rows[0][3] for rows in heads)  # the head changed with the rating
    for rows in steps:
        assert all(len(tokens) == 1 for _, tokens, _, _ in rows)
        assert [seq for seq, _, _, _ in rows] == list(range(len(rows))) and len(rows) >= 2
        assert sum(want for *_, want in rows) != 1
    assert any(len(rows) == 5 for rows in steps)
    assert any(len(rows) == 2 and rows[1][1:3] == (rows[0][1], 0) for rows in steps)  # a lone one, padded
    prompt_rows = sum(not want for rows in steps for *_, want in rows)
    assert prompt_rows >= 32  # prompt tokens went through the same steps as the sampled ones


def test_generate_variants_do_not_depend_on_parallel(dart):
    one = ok(run("generate", "1girl", "-m", dart, "-n", 5, "--seed", 3, "--max-new-tokens", 20, "--parallel", 2))
    many = ok(run("generate", "1girl", "-m", dart, "-n", 5, "--seed", 3, "--max-new-tokens", 20))
    assert one.stdout == many.stdout and len(one.stdout.splitlines()) == 5


def test_jsonl_records_override_options_and_are_reported_resolved(dart, tmp_path):
    src = write(
        tmp_path / "p.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"tags": "1girl", "id": "a"},
                {"tags": ["cat ears", "smile"], "rating": "explicit", "width": 1216, "height": 832, "num": 2},
                {
                    "tags": "solo",
                    "character": "hatsune miku",
                    "copyright": ["vocaloid"],
                    "length": "short",
                    "seed": 7,
                    "identity": "strict",
                },
                {},
            ]
        )
        + "\n\n",
    )
    out = tmp_path / "o.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--rating", "general", "--aspect-ratio", "tall", "--max-new-tokens", 5))
    r = jsonl(out)
    assert [(x["id"], x["line"], x["variant"]) for x in r] == [("a", 1, 0), (2, 2, 0), (2, 2, 1), (3, 3, 0), (4, 4, 0)]
    assert r[0]["conditions"] == {
        "copyright": [],
        "character": [],
        "rating": "general",
        "aspect_ratio": "tall",
        "length": "long",
        "identity": "lax",
    }
    assert r[1]["conditions"]["rating"] == "explicit" and r[1]["conditions"]["aspect_ratio"] == "wide"
    assert r[3]["conditions"]["character"] == ["hatsune miku"] and r[3]["conditions"]["copyright"] == ["vocaloid"]
    assert r[3]["conditions"]["length"] == "short" and r[3]["conditions"]["identity"] == "strict"
    assert r[3]["tags"][:3] == ["hatsune miku", "vocaloid", "solo"] and r[3]["input_tags"] == ["solo"]
    assert r[1]["input_tags"] == ["cat ears", "smile"] and r[1]["tags"][2:] == r[1]["new_tags"]
    assert r[4]["input_tags"] == [] and r[4]["new_tags"]
    # seeds: a record's own seed counts up per variant; the others are derived from base seed, id and variant
    assert r[3]["seed"] == 7
    assert r[0]["seed"] == derive_seed(0, "a", 0)
    assert (r[1]["seed"], r[2]["seed"]) == (derive_seed(0, 2, 0), derive_seed(0, 2, 1))


def test_a_record_with_an_id_gives_the_same_result_wherever_it_sits(dart, tmp_path):
    first = write(tmp_path / "a.jsonl", '{"id": "x", "tags": "1girl"}\n{"id": "y", "tags": "cat ears"}\n')
    moved = write(
        tmp_path / "b.jsonl", '{"tags": "flower"}\n{"id": "y", "tags": "cat ears"}\n{"tags": "sky"}\n{"id": "x", "tags": "1girl"}\n'
    )
    a, b = tmp_path / "a.out.jsonl", tmp_path / "b.out.jsonl"
    for src, out in ((first, a), (moved, b)):
        ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 10, "--seed", 9))
    by_id = lambda records: {r["id"]: (r["seed"], r["tags"]) for r in records}  # noqa: E731
    assert by_id(jsonl(a)).items() <= by_id(jsonl(b)).items()
    other = tmp_path / "c.out.jsonl"
    ok(run("batch", first, "-o", other, "-m", dart, "--max-new-tokens", 10, "--seed", 10))
    assert [r["seed"] for r in jsonl(other)] != [r["seed"] for r in jsonl(a)]


def test_toml_defaults_options_and_records_in_that_order(dart, tmp_path):
    src = write(
        tmp_path / "p.toml",
        """# a batch file
[defaults]
rating = "explicit"
length = "short"
max_new_tokens = 4
seed = 3

[[prompt]]
tags = "1girl, solo"

[[prompt]]  # the second
tags = ["cat ears"]
length = "very_long"
aspect_ratio = "wide"
""",
    )
    out = tmp_path / "o.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--rating", "general"))
    r = jsonl(out)
    assert [x["line"] for x in r] == [8, 11]
    assert [x["conditions"]["rating"] for x in r] == ["general", "general"]  # the option beats [defaults]
    assert [x["conditions"]["length"] for x in r] == ["short", "very_long"]  # a record's field beats both
    assert r[1]["conditions"]["aspect_ratio"] == "wide"
    assert r[0]["seed"] == derive_seed(3, 8, 0)  # [defaults] seed is the base seed
    assert {x["stop"] for x in r} <= {"max_new_tokens", "eos"} and all(len(x["new_tags"]) <= 4 for x in r)


def test_stdin_txt_and_jsonl(dart, tmp_path):
    text = ok(run("batch", "-", "-m", dart, "--max-new-tokens", 4, input="1girl\ncat ears\n"))
    assert [line.split(", ")[0] for line in text.stdout.splitlines()] == ["1girl", "cat ears"]
    records = ok(run("batch", "-", "-m", dart, "--max-new-tokens", 4, "--format", "jsonl", input='{"tags": "solo", "id": 1}\n'))
    (record,) = [json.loads(line) for line in records.stdout.splitlines()]
    assert record["input_tags"] == ["solo"]


def test_a_bad_record_stops_the_run_after_everything_before_it(dart, tmp_path):
    src = write(tmp_path / "p.jsonl", '{"tags": "1girl"}\n{"tags": "cat ears"}\n{"tags": "solo",\n{"tags": "sky"}\n')
    out = tmp_path / "o.jsonl"
    result = run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 4, "--parallel", 4)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {src}:3: not valid JSON")
    assert [r["line"] for r in jsonl(out)] == [1, 2]


def test_skip_errors_reports_counts_and_goes_on(dart, tmp_path):
    src = write(
        tmp_path / "p.jsonl",
        '{"tags": "1girl"}\n[1, 2]\n{"tags": "x", "ratng": "general"}\n{"tags": "y", "rating": "mild"}\n'
        '{"tags": "z", "quality": "masterpiece"}\n{"tags": "z", "num": "two"}\n{"tags": "sky"}\n',
    )
    out = tmp_path / "o.jsonl"
    result = ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 4, "--skip-errors"))
    assert [r["line"] for r in jsonl(out)] == [1, 7]
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert [line.split(": ")[1] for line in skipped] == [f"{src}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "must be a JSON object" in skipped[0]
    assert "'ratng' (did you mean rating?)" in skipped[1]
    assert "rating: 'mild' is not one of" in skipped[2]
    assert "quality is not used by" in skipped[3]
    assert "num: 'two' must be an integer" in skipped[4]
    assert "5 bad records skipped" in result.stderr and "7 records, 2 results" in result.stderr


def test_toml_syntax_error_names_the_line_in_the_file(dart, tmp_path):
    src = write(tmp_path / "p.toml", '[[prompt]]\ntags = "a"\n\n[[prompt]]\ntags = "b\n')
    result = run("batch", src, "-m", dart, "--max-new-tokens", 2)
    assert result.exit_code == 1
    assert f"error: {src}:5: not valid TOML" in result.stderr
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--shard", "3/3"], ["--shard", "0 <= K < N"]),
        (["--shard", "one"], ["--shard", "K/N"]),
        (["--format", "csv"], ["--format", "text, jsonl"]),
        (["--input-format", "yaml"], ["--input-format"]),
        (["--resume"], ["--resume needs the output file"]),
        (["-o", "out.csv"], ["name it .jsonl or .txt"]),
        (["--rating", "mild"], ["--rating"]),
        (["--quality", "masterpiece"], ["--quality is not used by"]),
        (["--parallel", "0"], ["--parallel"]),
    ],
)
def test_bad_options_fail_before_any_work(dart, tmp_path, monkeypatch, args, fragments):
    src = write(tmp_path / "p.txt", "1girl\n")
    monkeypatch.chdir(tmp_path)  # restored after the test: later tests run dtg from the repository
    assert_one_line_error(run("batch", src, "-m", dart, *args), *fragments)


def test_bad_files(dart, tmp_path):
    assert_one_line_error(run("batch", tmp_path / "missing.txt", "-m", dart), "no such input file")
    src = write(tmp_path / "p.txt", "1girl\n")
    existing = write(tmp_path / "o.jsonl", "")
    assert_one_line_error(run("batch", src, "-o", existing, "-m", dart), "exists: --resume continues it, --force replaces it")
    assert_one_line_error(run("batch", src, "-o", tmp_path / "nodir" / "o.jsonl", "-m", dart), "no such directory")
    bad_defaults = write(tmp_path / "p.toml", "[defaults]\nratin = 'general'\n[[prompt]]\ntags = 'a'\n")
    assert_one_line_error(run("batch", bad_defaults, "-m", dart), "[defaults]", "did you mean rating?")
    stray = write(tmp_path / "q.toml", "title = 'x'\n[[prompt]]\ntags = 'a'\n")
    assert_one_line_error(run("batch", stray, "-m", dart), "unknown table or key title")
    garbage = tmp_path / "g.txt"
    garbage.write_bytes(b"1girl\n\xff\xfe\n")
    result = run("batch", garbage, "-m", dart, "--max-new-tokens", 2)
    assert result.exit_code == 1 and f"{garbage}:2: not UTF-8 text" in result.stderr and len(result.stdout.splitlines()) == 1
    empty = write(tmp_path / "e.txt", "# nothing\n\n")
    result = ok(run("batch", empty, "-m", dart))
    assert result.stdout == "" and "0 records" in result.stderr
    mismatch = ok(run("batch", src, "-m", dart, "--max-new-tokens", 2, "--force", "-o", existing))
    assert len(jsonl(existing)) == 1 and mismatch.stdout == ""


def test_shards_together_equal_the_whole_run(dart, tmp_path):
    src = write(tmp_path / "p.txt", "\n".join(PROMPTS) + "\n# the end\n")
    whole = tmp_path / "whole.jsonl"
    ok(run("batch", src, "-o", whole, "-m", dart, "--max-new-tokens", 8, "-n", 2))
    parts = []
    for k in range(3):
        part = tmp_path / f"part{k}.jsonl"
        ok(run("batch", src, "-o", part, "-m", dart, "--max-new-tokens", 8, "-n", 2, "--shard", f"{k}/3"))
        parts.append(part)
    assert [r["line"] for r in jsonl(parts[1])] == [2, 2, 5, 5, 8, 8]  # records 1, 4, 7 (from 0)
    merged = ok(run("merge", *parts))
    assert merged.stdout == whole.read_text()
    text = ok(run("merge", *parts, "--format", "text"))
    assert text.stdout.splitlines() == [", ".join(r["tags"]) for r in jsonl(whole)]


def test_merge_refuses_what_is_not_a_batch_record(tmp_path):
    bad = write(tmp_path / "x.jsonl", '{"tags": []}\n')
    assert_one_line_error(run("merge", bad), f"{bad}:1", "not a dtg batch JSONL record")


@pytest.mark.parametrize("suffix", ["jsonl", "txt"])
def test_resume_after_the_process_is_killed(dart, tmp_path, suffix):
    """Kill a real run mid-way (SIGKILL: no chance to clean up), damage its last line as a crash in the
    middle of a write would, resume, and get exactly what an uninterrupted run writes."""
    prompts = PROMPTS * 6
    src = write(tmp_path / "p.txt", "\n".join(prompts) + "\n")
    common = ["-m", str(dart), "--max-new-tokens", "40", "-n", "2", "--parallel", "2", "--threads", "1", "--seed", "4"]
    whole = tmp_path / f"whole.{suffix}"
    ok(run("batch", src, "-o", whole, *common))
    out = tmp_path / f"out.{suffix}"
    process = subprocess.Popen([sys.executable, "-m", "dtg_cli", "batch", str(src), "-o", str(out), *common], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 10):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = out.read_bytes()
    assert 10 <= written.count(b"\n") < 2 * len(prompts), "the run was not interrupted mid-way"
    assert written.endswith(b"\n")  # whole lines only
    with open(out, "ab") as f:
        f.write(b'{"id": 3, "li')  # a half-written line
    resumed = ok(run("batch", src, "-o", out, *common, "--resume"))
    assert out.read_text() == whole.read_text()
    assert "results already written" in resumed.stderr


def test_resume_of_a_finished_run_does_nothing(dart, tmp_path):
    src = write(tmp_path / "p.txt", "1girl\ncat ears\n")
    out = tmp_path / "o.jsonl"
    ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 5))
    before = out.read_text()
    again = ok(run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 5, "--resume"))
    assert out.read_text() == before and "0 records" in again.stderr and "2 results already written" in again.stderr


def test_ctrl_c_leaves_a_valid_file_and_says_how_to_resume(dart, tmp_path, monkeypatch):
    from dtg_cli.batch import Output

    original = Output.write
    calls = []

    def interrupted_after_two(self, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        original(self, *args)

    monkeypatch.setattr(Output, "write", interrupted_after_two)
    src = write(tmp_path / "p.txt", "\n".join(PROMPTS) + "\n")
    out = tmp_path / "o.jsonl"
    result = run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 5)
    assert result.exit_code == 130
    assert "--resume" in result.stderr.splitlines()[-1] and "2 records" in result.stderr
    assert [r["line"] for r in jsonl(out)] == [1, 2]


def test_unknown_tags_are_summarised_once(dart, tmp_path):
    src = write(tmp_path / "p.txt", "1girl, cat earz\nsolo, cat earz\n")
    result = ok(run("batch", src, "-m", dart, "--max-new-tokens", 2))
    assert result.stderr.count("cat earz") == 1 and "'cat earz' (2x)" in result.stderr


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1, 0) == derive_seed(0, "1", 0)  # ids compare as text
    seeds = {derive_seed(b, i, v) for b in (0, 1) for i in range(50) for v in range(3)}
    assert len(seeds) == 300 and all(0 <= s < 2**32 for s in seeds)


def test_a_run_that_fails_before_any_result_says_the_error_alone(dart, tmp_path):
    """No summary of nothing (`0 records ...`) before the error of a run that wrote nothing; a run that wrote
    something says what it wrote, then the error."""
    src = write(tmp_path / "bad.jsonl", '{"tags": 3}\n{"tags": "1girl"}\n')
    result = run("batch", src, "-m", dart, "--max-new-tokens", 4)
    assert_one_line_error(result, f"{src}:1: tags: 3 must be a string")
    assert "records," not in result.stderr
    src = write(tmp_path / "late.jsonl", '{"tags": "1girl"}\n{"tags": 3}\n')
    result = run("batch", src, "-m", dart, "--max-new-tokens", 4)
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-2].startswith("1 records, 1 results, 4 new tags in ")


def test_a_summary_without_time_has_no_rate():
    from dtg_cli.batch import Summary

    assert Summary(base_seed=3).line() == "0 records, 0 results, 0 new tags in 0.0 s; base seed 3"
    assert (
        Summary(records=2, results=2, tags=8, elapsed_s=2.0).line()
        == "2 records, 2 results, 8 new tags in 2.0 s (1.00 records/s, 4 tags/s); base seed 0"
    )


def test_integers_written_as_json_floats_are_integers(dart, tmp_path):
    """JSON writers (and Ray Data's columns with gaps) write 3 as 3.0: such a record is the same record."""
    floats = write(
        tmp_path / "f.jsonl",
        '{"tags": "1girl", "seed": 3.0, "num": 2.0, "max_new_tokens": 8.0, "top_k": 5.0, "width": 832.0, "height": 1216.0}\n',
    )
    ints = write(
        tmp_path / "i.jsonl", '{"tags": "1girl", "seed": 3, "num": 2, "max_new_tokens": 8, "top_k": 5, "width": 832, "height": 1216}\n'
    )
    assert (
        ok(run("batch", floats, "-m", dart, "--format", "jsonl")).stdout == ok(run("batch", ints, "-m", dart, "--format", "jsonl")).stdout
    )
