import pytest

from dtg_cli.errors import SettingError, UsageError
from dtg_cli.families import named
from dtg_cli.registry import parse_registry, registry
from dtg_cli.settings import Request, Sampling, parse_aspect_ratio
from dtg_cli.tagtext import compile_bans, escape, split_tags


@pytest.mark.parametrize(
    "value,ratio",
    [("tall", 0.7), ("ultra-wide", 2.0), ("0.75", 0.75), (1.5, 1.5), ("3:4", 0.75), ("832x1216", 832 / 1216), ("16/9", 16 / 9)],
)
def test_aspect_ratio_forms(value, ratio):
    assert parse_aspect_ratio(value) == pytest.approx(ratio)


@pytest.mark.parametrize("value", ["portrait", "0", "-1", "3:0", "nan", "inf", "1:2:3"])
def test_bad_aspect_ratios(value):
    with pytest.raises(UsageError, match="^aspect_ratio: ") as e:
        parse_aspect_ratio(value)
    assert e.value.as_flags().startswith("--aspect-ratio: ")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"rating": "safe"}, "--rating: 'safe' is not one of sfw, general"),
        ({"length": "huge"}, "--length"),
        ({"identity": "loose"}, "--identity"),
        ({"width": 832}, "--width and --height go together"),
        ({"width": 832, "height": 1216, "aspect_ratio": "tall"}, "not both"),
        ({"width": 0, "height": 10}, "positive"),
        ({"num": 0}, "--num"),
        ({"ban": ["re:("]}, "not a valid regular expression"),
        ({"ban": ["  "]}, "empty pattern"),
        ({"sampling": {"temperature": -1}}, "--temperature: -1 must be between 0 and 100"),
        ({"sampling": {"top_p": 0}}, "--top-p"),
        ({"sampling": {"top_k": -1}}, "--top-k"),
        ({"sampling": {"min_p": 1.0}}, "--min-p"),
        ({"sampling": {"max_new_tokens": 0}}, "--max-new-tokens"),
        ({"sampling": {"seed": 2**32}}, "--seed"),
        ({"sampling": {"top_k": 2.5}}, "--top-k: 2.5 must be an integer"),
        ({"sampling": {"temprature": 1}}, "unknown sampling setting temprature"),
        ({"colour": "red"}, "unknown setting colour"),
    ],
)
def test_invalid_requests(options, message):
    """The library names settings as fields (max_new_tokens); the CLI words the same error with flags."""
    with pytest.raises(UsageError) as e:
        Request.from_options("1girl", **options)
    flags = e.value.as_flags() if isinstance(e.value, SettingError) else str(e.value)
    assert message in flags
    assert "--" not in str(e.value)


def test_request_keeps_conditions_and_lists_them():
    r = Request.from_options("1girl, cat ears", character="hatsune miku", rating="General", length="very-long", num=3)
    assert r.tags == ("1girl", "cat ears") and r.character == ("hatsune miku",)
    assert r.rating == "general" and r.length == "very_long" and r.num == 3
    assert r.conditions() == ["character", "rating", "length"]
    assert Request.from_options("1girl", ban="re:^(a|b), c").ban == ("re:^(a|b), c",)
    assert Request.from_options("1girl", ban=["*hair*", "smile"]).ban == ("*hair*", "smile")


def test_sampling_defaults_fill_only_what_is_unset():
    s = Sampling(temperature=0.5).with_defaults(named("dantaggen").sampling)
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.seed) == (0.5, 0.95, 100, 512, None)


def test_split_tags():
    assert split_tags("1girl,, cat  ears ,") == ["1girl", "cat ears"]
    assert split_tags(["a, b", "c"]) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "patterns,tag,banned",
    [
        (["*hair*"], "long hair", True),
        (["*hair*"], "hairband", True),
        (["*hair"], "hairband", False),
        (["long_hair"], "long hair", True),
        (["Long Hair"], "long hair", True),
        (["re:^blue"], "blue eyes", True),
        (["re:^blue"], "light blue eyes", False),
        (["re:eyes$", "smile"], "smile", True),
        ([], "smile", False),
    ],
)
def test_bans(patterns, tag, banned):
    assert compile_bans(patterns)(tag) is banned


def test_escape():
    assert escape("hatsune miku (cosplay)") == r"hatsune miku \(cosplay\)"
    assert escape(r"already \(escaped\)") == r"already \(escaped\)"


def test_registry_lists_every_released_model():
    models = registry()
    assert set(models) == {
        "dart-v2-moe-sft", "dart-v2-moe-base", "dart-v2-sft", "dart-v2-base", "dantaggen-alpha",
        "dantaggen-beta", "dantaggen-gamma", "dantaggen-delta", "dantaggen-delta-rev2",
        "tipo-500m", "tipo-200m", "tipo-200m-ft", "tipo-200m-ft2", "tipo-100m",
    }  # fmt: skip
    assert models["tipo-200m"].gguf_filename("f16") == "TIPO-200M-40Btok-F16.gguf" and models["tipo-200m"].in_hub("f16")
    assert models["tipo-200m"].gguf_filename("q8_0") == "tipo-200m-Q8_0.gguf" and not models["tipo-200m"].in_hub("q8_0")
    assert models["dart-v2-moe-sft"].revision == "167fdb177a6d68e2d4adca0be5f05d21f74e4d41"
    assert models["dantaggen-delta-rev2"].gguf_filename("q8_0") == "ggml-model-Q8_0.gguf"
    assert models["dart-v2-sft"].gguf_filename("q6_k") == "dart-v2-sft-Q6_K.gguf"
    assert {m.prompt for m in models.values()} == {"dart-v2-sft", "dart-v2-base", "dantaggen", "dantaggen-delta", "tipo"}


@pytest.mark.parametrize(
    "text,message",
    [
        ("[models.x]\nrepo = 'a/b'", "missing"),
        ("[models.x]\nrepo='a/b'\nfamily='f'\nprompt='nope'\narchitecture='a'\nparams='1'\ngguf='convert'", "unknown prompt format 'nope'"),
        ("[models.x]\nrepo='a/b'\nfamily='f'\nprompt='dantaggen'\narchitecture='a'\nparams='1'\ngguf='copy'", "gguf must be one of"),
        (
            "[models.x]\nrepo='a/b'\nfamily='f'\nprompt='dantaggen'\narchitecture='a'\nparams='1'\ngguf='convert'\ncolour='red'",
            "unknown key colour",
        ),
        ("models = [", "not valid TOML"),
    ],
)
def test_registry_validation(text, message):
    from dtg_cli.errors import DtgError

    with pytest.raises(DtgError, match=message):
        parse_registry(text)


def test_every_setting_is_an_option_of_both_commands_and_a_batch_field():
    """The settings table is the one declaration: each entry becomes a flag of dtg generate and dtg batch
    and a field a batch record may hold."""
    import typer.main

    from dtg_cli.batch import RECORD_FIELDS
    from dtg_cli.cli import app
    from dtg_cli.settings import SETTINGS

    commands = typer.main.get_command(app).commands
    for name in ("generate", "batch"):
        flags = {opt for param in commands[name].params for opt in (*param.opts, *param.secondary_opts)}
        for item in SETTINGS:
            if item.option:
                assert f"--{item.name.replace('_', '-')}" in flags, (name, item.name)
    assert {item.name for item in SETTINGS} | {"id"} == RECORD_FIELDS
    assert "-n" in {opt for p in commands["generate"].params for opt in p.opts}


def test_help_texts_state_each_familys_defaults_and_every_prompt_format():
    """The help texts are written out (the CLI loads no family for a page); they must say what the
    families hold."""
    import typer.main

    from dtg_cli.cli import app
    from dtg_cli.families import FAMILIES, formats
    from dtg_cli.settings import SETTINGS

    for item in SETTINGS:
        if item.group == "sampling" and item.name != "seed":
            stated = ", ".join(f"{family.name} {getattr(family.sampling, item.name)}" for family in FAMILIES)
            assert f"(default: {stated})" in item.help, item.name
    (prompt_format,) = [p for p in typer.main.get_command(app).commands["generate"].params if p.name == "prompt_format"]
    assert prompt_format.help.endswith(f": {', '.join(formats())}.")
