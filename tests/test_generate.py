"""The generation engine on the tiny fixture GGUFs: determinism, sampling, bans, stops, and greedy parity
with transformers' `generate` on the same checkpoints."""

import numpy as np
import pytest

from dtg_cli.engine import Generator
from dtg_cli.errors import UsageError
from dtg_cli.sampler import Sampler
from dtg_cli.settings import Request, Sampling

ALL = ["dart-moe", "dart-dense", "dantaggen"]


@pytest.fixture(scope="module")
def generators(ggufs):
    formats = {"dart-moe": "dart-v2-sft", "dart-dense": "dart-v2-sft", "dantaggen": "dantaggen-delta"}
    opened = {kind: Generator(ggufs[kind]["q8_0"], prompt_format=formats[kind]) for kind in ALL}
    yield opened
    for g in opened.values():
        g.close()


def run(generator, tags="1girl, cat ears", **options):
    return list(generator.generate(Request.from_options(tags, **options)))


@pytest.mark.parametrize("kind", ALL)
def test_same_seed_same_output_and_other_seeds_differ(generators, kind):
    g = generators[kind]
    first = run(g, sampling={"seed": 7, "max_new_tokens": 24})[0]
    again = run(g, sampling={"seed": 7, "max_new_tokens": 24})[0]
    other = run(g, sampling={"seed": 8, "max_new_tokens": 24})[0]
    assert first.output_ids == again.output_ids and first.tags == again.tags
    assert first.output_ids != other.output_ids
    assert first.seed == 7 and len(first.output_ids) == 24


@pytest.mark.parametrize("kind", ["dart-moe", "dantaggen"])
def test_variants_equal_single_runs_with_consecutive_seeds(generators, kind):
    g = generators[kind]
    variants = run(g, num=3, sampling={"seed": 100, "max_new_tokens": 16})
    assert [r.seed for r in variants] == [100, 101, 102]
    for r in variants:
        assert r.output_ids == run(g, sampling={"seed": r.seed, "max_new_tokens": 16})[0].output_ids


def test_random_seed_is_reported(generators):
    a, b = run(generators["dart-moe"], num=2, sampling={"max_new_tokens": 4})
    assert 0 <= a.seed < 2**32 and b.seed == a.seed + 1  # a random base leaves room: seeds never wrap


def test_dart_result_layout(generators):
    r = run(
        generators["dart-moe"],
        "1girl, Cat_Ears, 1girl",
        character="hatsune miku",
        copyright="vocaloid",
        sampling={"seed": 1, "max_new_tokens": 30},
    )[0]
    assert r.input_tags == ["1girl", "cat ears"]
    assert r.tags[:4] == ["hatsune miku", "vocaloid", "1girl", "cat ears"]
    assert r.tags[4:] == r.new_tags
    # one tag per generated id: the new tags are the generated tokens, less repeats and special tokens
    tag_of = generators["dart-moe"].tokenizer.tag_of
    generated = [tag_of[i] for i in r.output_ids if i in tag_of]
    assert r.new_tags == list(dict.fromkeys(t for t in generated if t not in ("1girl", "cat ears", "hatsune miku", "vocaloid")))
    assert r.stop == "max_new_tokens" and r.timings["new_tokens"] == 30


def test_dart_ban_removes_tags_before_sampling(generators):
    g = generators["dart-moe"]
    plain = run(g, num=4, sampling={"seed": 3, "max_new_tokens": 40})
    common = {t for r in plain for t in r.new_tags}
    victim = sorted(common)[0]
    banned = run(g, num=4, ban=[victim, "re:hair", "*girl*"], sampling={"seed": 3, "max_new_tokens": 40})
    for r in banned:
        assert victim not in r.new_tags
        assert not [t for t in r.new_tags if "hair" in t or "girl" in t]
        assert len(r.output_ids) == 40  # the budget is spent on other tags
    # a ban covering every tag leaves only special tokens to sample
    assert run(g, ban=["*"], sampling={"seed": 3, "max_new_tokens": 10})[0].new_tags == []


def test_dantaggen_ban_filters_generated_tags(generators):
    g = generators["dantaggen"]
    plain = run(g, sampling={"seed": 5, "max_new_tokens": 60, "temperature": 0})[0]
    assert plain.new_tags  # random weights still write commas now and then
    victim = plain.new_tags[0]
    filtered = run(g, ban=[f"re:^{__import__('re').escape(victim)}$"], sampling={"seed": 5, "max_new_tokens": 60, "temperature": 0})[0]
    assert victim not in filtered.new_tags
    assert filtered.output_ids == plain.output_ids  # same generation, tag filtered afterwards


def test_dantaggen_continues_when_it_stops_short(generators, monkeypatch):
    """The model ends (</s>) before the length target: dtg continues from what it has, up to 3 times."""
    g = generators["dantaggen"]
    calls = []

    class StopsEarly(Sampler):
        def __call__(self, logits):
            calls.append(1)
            return 2 if len(calls) % 5 == 0 else super().__call__(logits)  # </s> every fifth token

    monkeypatch.setattr("dtg_cli.sequence.Sampler", StopsEarly)
    r = run(g, "1girl", length="very_long", sampling={"seed": 1, "max_new_tokens": 50})[0]
    assert r.stop == "eos" and len(r.output_ids) == 5 and r.output_ids[-1] == 2
    assert len(r.continuations) == 3
    for c in r.continuations:
        assert c["prompt"].endswith("<|input_end|>") and c["output_ids"][-1] == 2
    # each continuation prompt carries the tags found so far
    assert set(r.new_tags) >= set(_general(r.continuations[-1]["prompt"])) - {"1girl"}


def _general(prompt):
    line = prompt.splitlines()[-1].removeprefix("general: ").removesuffix("<|input_end|>")
    return [t.strip() for t in line.split(",") if t.strip()]


def test_dantaggen_medium_stops_before_thirty_tags(generators, monkeypatch):
    g = generators["dantaggen"]
    comma = g.model.tokenize(",", add_special=False)[-1]
    words = [ids[-1] for w in ["cat", "dog", "sun", "red", "blue", "tree", "star", "moon", "rain", "fire", "snow", "wind",
                               "book", "hat", "cup", "car", "bird", "fish", "rose", "lake", "road", "door", "ring",
                               "bell", "leaf", "wave", "sand", "rock", "gold", "milk", "salt", "kite", "lamp", "nest"]
             if len(ids := g.model.tokenize(" " + w, add_special=False)) in (1, 2)]  # fmt: skip
    assert len(set(words)) >= 30
    counter = iter(range(10**6))

    class Tags(Sampler):  # writes "cat, dog, sun, ...": one new tag per two tokens
        def __call__(self, logits):
            n = next(counter)
            return comma if n % 2 else words[n // 2 % len(words)]

    monkeypatch.setattr("dtg_cli.sequence.Sampler", Tags)
    r = run(g, "1girl, solo", length="medium", sampling={"seed": 1, "max_new_tokens": 200})[0]
    assert r.stop == "length" and len(r.input_tags) + len(r.new_tags) == 29


def test_stop_token_ends_generation(generators, monkeypatch):
    g = generators["dart-moe"]
    counter = iter(range(10**6))

    class Ends(Sampler):
        def __call__(self, logits):
            return 7 if next(counter) == 3 else super().__call__(logits)  # </general>

    monkeypatch.setattr("dtg_cli.sequence.Sampler", Ends)
    r = run(g, sampling={"seed": 1, "max_new_tokens": 50})[0]
    assert r.stop == "eos" and r.output_ids[-1] == 7 and len(r.output_ids) == 4


def test_condition_the_format_does_not_take(generators):
    with pytest.raises(UsageError, match="^artist is not used by .*dantaggen-delta-rev2"):
        run(generators["dart-moe"], artist="wlop")
    with pytest.raises(UsageError, match="^identity is not used"):
        run(generators["dantaggen"], identity="strict")


def test_context_limit(generators):
    with pytest.raises(UsageError, match="takes at most 1024"):
        run(generators["dart-moe"], sampling={"max_new_tokens": 2000})


def test_unknown_tags_warn_with_close_matches(generators, caplog):
    run(generators["dart-dense"], "1girl, cat earz", sampling={"seed": 1, "max_new_tokens": 2})
    warning = [r.getMessage() for r in caplog.records if "cat earz" in r.getMessage()]
    assert len(warning) == 1 and "<|unk|>" in warning[0] and "cat ears" in warning[0]


# --- the sampler ----------------------------------------------------------------------------------


def test_sampler_greedy_and_bias():
    logits = np.array([0.0, 3.0, 1.0, 2.9], dtype=np.float32)
    assert Sampler(Sampling(temperature=0), 0)(logits) == 1
    bias = np.array([0, -np.inf, 0, 0], dtype=np.float32)
    assert Sampler(Sampling(temperature=0), 0, bias)(logits) == 3


@pytest.mark.parametrize(
    "settings,allowed",
    [
        (Sampling(temperature=1, top_k=2, top_p=1, min_p=0), {1, 3}),
        (Sampling(temperature=1, top_k=0, top_p=0.45, min_p=0), {1}),
        (Sampling(temperature=1, top_k=0, top_p=0.5, min_p=0), {1, 3}),
        (Sampling(temperature=1, top_k=0, top_p=1, min_p=0.5), {1, 3}),
        (Sampling(temperature=1, top_k=0, top_p=1, min_p=0), {0, 1, 2, 3}),
    ],
)
def test_sampler_truncation(settings, allowed):
    logits = np.array([0.0, 3.0, 1.0, 2.9], dtype=np.float32)
    sampler = Sampler(settings, 0)
    drawn = {sampler(logits) for _ in range(400)}
    assert drawn == allowed


def test_sampler_follows_the_distribution():
    logits = np.log(np.array([0.1, 0.6, 0.3], dtype=np.float32))
    sampler = Sampler(Sampling(temperature=1, top_k=0, top_p=1, min_p=0), 0)
    counts = np.bincount([sampler(logits) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(counts, [0.1, 0.6, 0.3], atol=0.015)


# --- parity with transformers ---------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("kind", ALL)
def test_greedy_tokens_match_transformers_generate(checkpoints, ggufs, kind):
    """`dtg generate --temperature 0` on the F16 GGUF returns the tokens of transformers' greedy generate."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import json

    from typer.testing import CliRunner

    from dtg_cli.cli import app

    prompts = {"dart-moe": "dart-v2-sft", "dart-dense": "dart-v2-sft", "dantaggen": "dantaggen-delta"}
    for tags in ["1girl, cat ears", "2girls, multiple girls, smile, outdoors", ""]:
        result = CliRunner().invoke(
            app,
            ["generate", tags, "--model", str(ggufs[kind]["f16"]), "--prompt-format", prompts[kind], "--temperature", "0",
             "--max-new-tokens", "40", "--format", "json", "--threads", "2"],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        (record,) = json.loads(result.stdout)
        model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints[kind], torch_dtype=torch.float32)
        stops = [1, 7] if kind.startswith("dart") else [2]
        with torch.no_grad():
            out = model.generate(
                torch.tensor([record["input_ids"]]), attention_mask=torch.ones(1, len(record["input_ids"]), dtype=torch.long),
                do_sample=False, max_new_tokens=40, eos_token_id=stops, pad_token_id=stops[0],
            )  # fmt: skip
        reference = out[0, len(record["input_ids"]) :].tolist()
        assert record["output_ids"] == reference, tags
        assert record["continuations"] == []
