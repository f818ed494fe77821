"""The tag database, web-UI prompt syntax, categorisation and the `dtg tags` commands."""

import json

import pytest

from dtg_cli.categories import identify, parse_template
from dtg_cli.errors import UsageError
from dtg_cli.families import formats
from dtg_cli.reading import read
from dtg_cli.rendering import Style, render
from dtg_cli.settings import Request
from dtg_cli.syntax import Emphasis, Piece, parse
from dtg_cli.tagtext import escape
from tests.checkpoints import dart_vocab
from tests.test_cli import assert_one_line_error, run

FORMATS = formats()

PASTED = "hatsune_miku, (masterpiece:1.2), vocaloid, 1girl, /lh, cat ears, <lora:style:0.8>, BREAK, looking at viewer"
DART_VOCAB = frozenset(dart_vocab())


# --- parsing ------------------------------------------------------------------------------------------


def test_parse_keeps_weights_networks_and_break():
    pieces, webui = parse(PASTED)
    assert webui
    assert pieces[1] == Piece("tag", "masterpiece", (Emphasis("(", "1.2"),))
    assert pieces[6] == Piece("network", "<lora:style:0.8>") and pieces[7] == Piece("break", "BREAK")
    assert [p.text for p in pieces if p.kind == "tag"] == [
        "hatsune_miku",
        "masterpiece",
        "vocaloid",
        "1girl",
        "/lh",
        "cat ears",
        "looking at viewer",
    ]


@pytest.mark.parametrize(
    "text,tag,wrapped",
    [
        ("((cat ears))", "cat ears", "((cat ears))"),
        ("[smile]", "smile", "[smile]"),
        ("(smile:0.8)", "smile", "(smile:0.8)"),
        ("((smile):1.3)", "smile", "((smile):1.3)"),
        (r"ganyu \(genshin impact\)", "ganyu (genshin impact)", "ganyu (genshin impact)"),
        ("ganyu (genshin impact)", "ganyu (genshin impact)", "ganyu (genshin impact)"),
        ("(ganyu (genshin impact):1.1)", "ganyu (genshin impact)", "(ganyu (genshin impact):1.1)"),
        ("(:3)", ":3", "(:3)"),
        ("(foo [bar]:0.9)", "foo [bar]", "(foo [bar]:0.9)"),
        ("<lyco:thing:1>", "<lyco:thing:1>", "<lyco:thing:1>"),
        ("[cat:dog:0.5]", "[cat:dog:0.5]", "[cat:dog:0.5]"),
    ],
)
def test_parse_one_piece(text, tag, wrapped):
    (piece,), _ = parse(text)
    assert piece.text == tag and piece.wrapped() == wrapped


def test_kaomoji_keep_their_brackets():
    pieces, webui = parse(";), >:), >:(, ;(, (;\\):1.1), ^_^")
    assert [p.wrapped() for p in pieces] == [";)", ">:)", ">:(", ";(", "(;):1.1)", "^_^"]
    assert parse(";)")[1] is False


def test_a_group_over_several_tags_weights_each():
    pieces, _ = parse("(red hair, blue eyes:1.2), a BREAK b")
    assert [p.wrapped() for p in pieces] == ["(red hair:1.2)", "(blue eyes:1.2)", "a", "BREAK", "b"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("(cat ears", "never closed"),
        ("cat ears)", "unbalanced"),
        ("()", "no tag inside"),
        ("(:1.2)", "weight with no tag"),
        ("[a)", "unbalanced"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse(text)


# --- the database and categories ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "written,name,category",
    [
        ("1girl", "1girl", "people"),
        ("2boys", "2boys", "people"),
        ("No_Humans", "no humans", "people"),
        ("1girls", "1girl", "people"),  # an alias
        ("hatsune_miku", "hatsune miku", "character"),
        ("/hm", "hatsune miku", "character"),
        ("ganyu (genshin impact)", "ganyu (genshin impact)", "character"),
        ("GANYU_(GENSHIN_IMPACT)", "ganyu (genshin impact)", "character"),
        ("genshin", "genshin impact", "copyright"),
        ("vocaloid", "vocaloid", "copyright"),
        ("ebifurya", "ebifurya", "artist"),
        ("cat_ears", "cat ears", "general"),
        ("/lh", "long hair", "general"),
        ("longhair", "long hair", "general"),
        ("^_^", "^_^", "general"),  # a kaomoji keeps its underscore
        ("highres", "highres", "meta"),
        ("absurdres", "absurdres", "meta"),
        ("explicit", "explicit", "rating"),
        ("rating:general", "rating:general", "rating"),
        ("masterpiece", "masterpiece", "quality"),
        ("Best Quality", "best quality", "quality"),
        ("score_9", "score_9", "quality"),
    ],
)
def test_identify(written, name, category):
    known = identify(written)
    assert (known.name, known.category) == (name, category)
    assert known.unknown is False


def test_ambiguous_names():
    # "sonic the hedgehog" is a character's name and an alias of the copyright "sonic (series)": a name
    # always wins over an alias, so it is the character; the series is asked for by its own name.
    assert identify("sonic the hedgehog").category == "character"
    assert identify("sonic (series)").category == "copyright"
    assert identify("kirby").category == "character" and identify("kirby (series)").category == "copyright"
    # An alias shared by several tags stands for the most used one.
    assert identify("descensored").name == "uncensored"


# --- reading a request ----------------------------------------------------------------------------------


def prompt(fmt: str, tags: str, vocabulary=None, **options) -> str:
    f = FORMATS[fmt]
    request = read(Request.from_options(tags, **options), f.accepts, vocabulary).request
    return f.build(request, list(request.tags))


def test_dart_prompt_from_a_pasted_web_ui_prompt():
    assert prompt("dart-v2-sft", PASTED, DART_VOCAB) == (
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character><|rating:sfw|><|aspect_ratio:tall|>"
        "<|length:long|><general>1girl, long hair, cat ears, looking at viewer<|identity:lax|><|input_end|>"
    )


def test_dantaggen_prompt_from_a_pasted_web_ui_prompt():
    text = "ebifurya, " + PASTED + ", highres, explicit"
    assert prompt("dantaggen-delta", text) == (
        "quality: masterpiece\nrating: explicit\nartist: ebifurya\ncharacters: hatsune miku\ncopyrights: vocaloid\n"
        "aspect ratio: 0.7\ntarget: <|long|>\ngeneral: 1girl, long hair, cat ears, looking at viewer<|input_end|>"
    )


def test_no_auto_gives_every_tag_as_general():
    assert prompt("dantaggen", "hatsune miku, solo, 1girl", auto=False).endswith(
        "characters: <|empty|>\ncopyrights: <|empty|>\naspect ratio: 0.7\ntarget: <|long|>\ngeneral: 1girl, hatsune miku, solo<|input_end|>"
    )


def test_flags_win_over_the_list():
    text = prompt("dart-v2-sft", "kagamine rin, 1girl, explicit", DART_VOCAB, character="hatsune miku", rating="general")
    assert "<character>hatsune miku</character><|rating:general|>" in text
    assert "<general>kagamine rin, 1girl<|identity" in text  # the list's character is then a general tag


def test_normalisation_and_duplicates():
    reading = read(Request.from_options("Cat_Ears, cat ears, /lh, long_hair, LONG HAIR, 1girl"), FORMATS["dart-v2-sft"].accepts)
    assert reading.request.tags == ("cat ears", "long hair", "1girl")


def test_dart_has_no_artist_or_quality_field():
    reading = read(Request.from_options("ebifurya, masterpiece, highres, 1girl"), FORMATS["dart-v2-sft"].accepts, DART_VOCAB)
    assert reading.request.tags == ("1girl",) and reading.request.artist == () and reading.request.quality == ()
    assert [k.name for k in reading.outside] == ["ebifurya", "masterpiece", "highres"]


# --- writing back ------------------------------------------------------------------------------------------


def layout_of(tags: str, fmt: str = "dart-v2-sft", **options):
    return read(Request.from_options(tags, **options), FORMATS[fmt].accepts, DART_VOCAB).layout


def test_render_model_order_keeps_everything_in_place():
    text, tags = render(layout_of(PASTED), ["smile", "solo"])
    assert text == (
        "hatsune miku, (masterpiece:1.2), vocaloid, 1girl, long hair, cat ears, <lora:style:0.8>, BREAK, looking at viewer, smile, solo"
    )
    assert tags[-2:] == ["smile", "solo"] and "masterpiece" in tags


def test_render_new_tags_go_before_trailing_networks():
    text, _ = render(layout_of("1girl, <lora:a:1>"), ["smile"])
    assert text == "1girl, smile, <lora:a:1>"


def test_render_category_and_alpha_orders():
    layout = layout_of("masterpiece, cat ears, hatsune miku, 1girl, vocaloid, highres, explicit")
    text, _ = render(layout, ["smile"], Style(order="category"))
    assert text == "1girl, hatsune miku, vocaloid, cat ears, smile, highres, explicit, masterpiece"
    text, _ = render(layout, ["smile"], Style(order="category", template=parse_template("<|special|>, <|characters|>, <|general|>")))
    assert text == "1girl, hatsune miku, cat ears, smile"
    text, _ = render(layout, ["smile"], Style(order="alpha"))
    assert text == "1girl, cat ears, explicit, hatsune miku, highres, masterpiece, smile, vocaloid"


def test_render_sorts_within_break_sections():
    text, _ = render(layout_of("solo, (1girl:1.1), <lora:x:1>, BREAK, smile, cat ears"), ["blush"], Style(order="alpha"))
    assert text == "(1girl:1.1), solo, <lora:x:1>, BREAK, blush, cat ears, smile"


def test_render_escape_and_underscores():
    plain = layout_of("ganyu (genshin impact), long hair")
    assert render(plain, [])[0] == "ganyu (genshin impact), long hair"  # no web-UI syntax given, none written
    assert render(plain, [], Style(escape=True))[0] == r"ganyu \(genshin impact\), long hair"
    webui = layout_of(r"ganyu \(genshin impact\), (long hair:1.1)")
    assert render(webui, ["hat (object)"])[0] == r"ganyu \(genshin impact\), (long hair:1.1), hat \(object\)"
    assert render(webui, [], Style(escape=False, underscores=True))[0] == "ganyu_(genshin_impact), (long_hair:1.1)"


def test_template_errors():
    with pytest.raises(UsageError, match="not a category"):
        parse_template("people, colour")
    with pytest.raises(UsageError, match="named twice"):
        parse_template("general, general")
    with pytest.raises(UsageError, match="at least one"):
        parse_template(" , ")


def test_escape_is_idempotent():
    assert escape(r"a \(b\)") == r"a \(b\)" and escape("a (b)") == r"a \(b\)"


# --- through the models --------------------------------------------------------------------------------------


def generate_json(model, *args):
    result = run("generate", PASTED, "-m", model, "--seed", 1, "--max-new-tokens", 6, "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    (r,) = json.loads(result.stdout)
    return r


def test_dart_end_to_end_keeps_the_users_syntax(dart):
    r = generate_json(dart)
    assert r["prompt"] == (
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character><|rating:sfw|><|aspect_ratio:tall|>"
        "<|length:long|><general>1girl, long hair, cat ears, looking at viewer<|identity:lax|><|input_end|>"
    )
    assert r["new_tags"]
    head = "hatsune miku, (masterpiece:1.2), vocaloid, 1girl, long hair, cat ears, <lora:style:0.8>, BREAK, looking at viewer"
    assert r["text"] == ", ".join([head, *r["new_tags"]])
    assert all(t == escape(t) for t in r["new_tags"])  # web-UI input: new tags come escaped


def test_dantaggen_end_to_end_keeps_the_users_syntax(dtg):
    r = generate_json(dtg, "--prompt-format", "dantaggen-delta")
    assert r["prompt"] == (
        "quality: masterpiece\nrating: safe\nartist: <|empty|>\ncharacters: hatsune miku\ncopyrights: vocaloid\n"
        "aspect ratio: 0.7\ntarget: <|long|>\ngeneral: 1girl, long hair, cat ears, looking at viewer<|input_end|>"
    )
    head = "hatsune miku, (masterpiece:1.2), vocaloid, 1girl, long hair, cat ears, <lora:style:0.8>, BREAK, looking at viewer"
    assert r["text"] == ", ".join([head, *r["new_tags"]])


def test_text_output_orders(dart):
    base = ("generate", "explicit, cat ears, hatsune miku, 1girl", "-m", dart, "--seed", 1, "--max-new-tokens", 8)
    line = run(*base, "--order", "category", "--template", "people, character, rating").stdout.strip()
    new = json.loads(run(*base, "--format", "json").stdout)[0]["new_tags"]
    by = {c: [t for t in new if identify(t).category == c] for c in ("people", "character", "general")}
    assert by["general"]  # some new tags are left out below
    assert line == ", ".join(["1girl", *by["people"], "hatsune miku", *by["character"], "explicit"])
    r = json.loads(run(*base, "--format", "json", "--underscores").stdout)[0]
    assert r["text"].startswith("explicit, cat_ears, hatsune_miku, 1girl") and "<|rating:explicit|>" in r["prompt"]
    assert "<general>cat ears, 1girl<|identity" in r["prompt"]


def test_unknown_and_missing_tags_warn_on_stderr(dart):
    result = run("generate", "1girl, cat earz, biting finger", "-m", dart, "--seed", 1, "--max-new-tokens", 2)
    assert result.exit_code == 0
    assert "biting finger" not in DART_VOCAB  # a real danbooru tag the fixture vocabulary lacks
    err = result.stderr
    assert "unknown tag 'cat earz'" in err and "did you mean: cat ears" in err
    assert "'biting finger' is a danbooru general tag, but not in" in err


def test_dantaggen_warns_about_tags_the_database_does_not_hold(dtg):
    result = run("generate", "1girl, cat earz", "-m", dtg, "--seed", 1, "--max-new-tokens", 2, "--prompt-format", "dantaggen")
    assert result.exit_code == 0 and "unknown tag 'cat earz'" in result.stderr and "cat ears" in result.stderr


def test_bad_tag_syntax_is_a_one_line_error(dart):
    assert_one_line_error(run("generate", "(cat ears", "-m", dart), "never closed")
    assert_one_line_error(run("generate", "1girl", "-m", dart, "--order", "random"), "--order")
    assert_one_line_error(run("generate", "1girl", "-m", dart, "--template", "people, colour"), "--template")


def test_batch_keeps_syntax_and_takes_auto_per_record(dart, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(
        json.dumps({"tags": "(hatsune miku:1.1), 1girl, <lora:a:1>"})
        + "\n"
        + json.dumps({"tags": "hatsune miku, 1girl", "auto": False})
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    result = run("batch", src, "-o", out, "-m", dart, "--max-new-tokens", 3)
    assert result.exit_code == 0, result.stderr
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["text"].startswith("(hatsune miku:1.1), 1girl, ") and first["text"].endswith(", <lora:a:1>")
    assert first["conditions"]["character"] == ["hatsune miku"] and second["conditions"]["character"] == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tags": "1girl", "auto": "yes"}) + "\n")
    assert_one_line_error(run("batch", bad, "-m", dart), "auto")


# --- dtg tags check / search -----------------------------------------------------------------------------------


def test_tags_check_json(dart):
    result = run("tags", "check", PASTED + ", cat earz, biting finger", "-m", dart, "--format", "json")
    assert result.exit_code == 1  # an unknown tag and one the model lacks
    rows = {r["input"]: r for r in json.loads(result.stdout)["tags"]}
    assert rows["(masterpiece:1.2)"]["category"] == "quality" and rows["(masterpiece:1.2)"]["model_knows"] is None
    assert (rows["/lh"]["tag"], rows["/lh"]["alias"], rows["/lh"]["model_knows"]) == ("long hair", "/lh", True)
    assert rows["hatsune_miku"]["category"] == "character" and rows["hatsune_miku"]["posts"] > 100_000
    assert rows["cat earz"]["unknown"] and rows["cat earz"]["suggestions"][0] == "cat ears"
    assert rows["biting finger"]["model_knows"] is False and not rows["biting finger"]["unknown"]
    assert "<lora:style:0.8>" not in rows and "BREAK" not in rows


def test_tags_check_table_without_a_model_on_disk():
    result = run("tags", "check", "1girl, ganyu (genshin impact)")
    assert result.exit_code == 0
    assert "ganyu" in result.stdout and "character" in result.stdout and "18,317" in result.stdout
    assert "not on disk" in result.stderr


@pytest.mark.parametrize(
    "tags,message",
    [("", "the input holds nothing"), ("  ,  , ", "the input holds nothing"), ("(:1.2)", "weight with no tag"),
     ("<lora:a:1>, <lyco:b:0.5>", "only networks"), ("BREAK", "only breaks"), ("((a)", "never closed")],
)  # fmt: skip
def test_tags_check_bad_input(tags, message):
    assert_one_line_error(run("tags", "check", tags), message)


def test_tags_search():
    result = run("tags", "search", "*hair*", "-n", 3, "--format", "json")
    assert result.exit_code == 0
    assert [r["tag"] for r in json.loads(result.stdout)] == ["long hair", "short hair", "blonde hair"]
    table = run("tags", "search", "ganyu", "--category", "character", "-n", 2)
    assert table.exit_code == 0 and "ganyu (genshin impact)" in table.stdout and "18,317" in table.stdout


@pytest.mark.parametrize(
    "args,message",
    [(["", ], "pattern is empty"), (["cat", "--limit", "0"], "--limit"), (["cat", "--category", "people"], "--category"),
     (["cat", "--format", "xml"], "--format")],
)  # fmt: skip
def test_tags_search_bad_input(args, message):
    assert_one_line_error(run("tags", "search", *args), message)


def test_tags_search_without_a_match_exits_1():
    result = run("tags", "search", "zzzzqqqq")
    assert result.exit_code == 1 and result.stdout == "" and "no tag matches" in result.stderr


def test_stream_parts_split_the_line_where_new_tags_go():
    from dtg_cli.rendering import stream_parts

    layout = layout_of("(1girl:1.1), <lora:a:1>, BREAK, solo, <lora:b:1>")
    before, after = stream_parts(layout, Style())
    assert (before, after) == ("(1girl:1.1), <lora:a:1>, BREAK, solo", "<lora:b:1>")
    assert ", ".join([before, "smile", after]) == render(layout, ["smile"])[0]
