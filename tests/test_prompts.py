"""Golden prompts: the exact text and token ids of every format under a range of flag combinations.

Dart's special-token ids are the ones REFERENCE.md lists (0-102, `1girl` = 103); the fixture tokenizer
has the real model's special tokens in the real order.
"""

import pytest

from dtg_cli.families import formats
from dtg_cli.families.dart_v2 import dart_aspect_bucket
from dtg_cli.reading import read
from dtg_cli.settings import Request

FORMATS = formats()

SFT, BASE = FORMATS["dart-v2-sft"], FORMATS["dart-v2-base"]
DTG, DELTA = FORMATS["dantaggen"], FORMATS["dantaggen-delta"]

# Dart special tokens by id (REFERENCE.md)
BOS, EOS, GENERAL, GENERAL_END, CHARACTER, CHARACTER_END, COPYRIGHT, COPYRIGHT_END = 0, 1, 6, 7, 8, 9, 10, 11
RATING = {"sfw": 12, "nsfw": 13, "general": 14, "sensitive": 15, "questionable": 16, "explicit": 17}
LENGTH = {"very_short": 23, "short": 24, "medium": 25, "long": 26, "very_long": 27}
ASPECT = {"ultra_wide": 28, "wide": 29, "square": 30, "tall": 31, "ultra_tall": 32}
INPUT_END = 34
IDENTITY = {"none": 36, "lax": 37, "strict": 38}
ONE_GIRL = 103


def build(fmt, tags="", **options):
    request = read(Request.from_options(tags, **options), fmt.accepts).request
    return fmt.build(request, list(request.tags))


def test_dart_sft_defaults():
    assert build(SFT, "1girl, cat ears") == (
        "<|bos|><copyright></copyright><character></character><|rating:sfw|><|aspect_ratio:tall|><|length:long|>"
        "<general>1girl, cat ears<|identity:lax|><|input_end|>"
    )


def test_dart_sft_every_condition():
    text = build(
        SFT, "1girl, solo", copyright="vocaloid", character="hatsune miku", rating="general",
        width=1216, height=832, length="very_long", identity="strict",
    )  # fmt: skip
    assert text == (
        "<|bos|><copyright>vocaloid</copyright><character>hatsune miku</character><|rating:general|>"
        "<|aspect_ratio:wide|><|length:very_long|><general>1girl, solo<|identity:strict|><|input_end|>"
    )


def test_dart_base_has_no_identity_and_sorts_the_general_tags():
    text = build(BASE, "solo, 1girl, cat ears", rating="explicit", aspect_ratio="square", length="short")
    assert text == (
        "<|bos|><copyright></copyright><character></character><|rating:explicit|><|aspect_ratio:square|>"
        "<|length:short|><general>1girl, cat ears, solo"
    )


def test_dart_empty_prompt():
    assert build(SFT) == (
        "<|bos|><copyright></copyright><character></character><|rating:sfw|><|aspect_ratio:tall|>"
        "<|length:long|><general><|identity:lax|><|input_end|>"
    )


@pytest.mark.parametrize(
    "ratio,bucket",
    [(0.5, "ultra_tall"), (0.51, "tall"), (8 / 9, "tall"), (0.9, "square"), (1.0, "square"), (1.124, "square"),
     (9 / 8, "wide"), (1.99, "wide"), (2.0, "ultra_wide"), (3.0, "ultra_wide")],
)  # fmt: skip
def test_dart_aspect_ratio_buckets(ratio, bucket):
    assert dart_aspect_bucket(ratio) == bucket


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, [RATING["sfw"], ASPECT["tall"], LENGTH["long"], IDENTITY["lax"]]),
        ({"rating": "nsfw", "aspect_ratio": "ultra_wide", "length": "very_short", "identity": "none"},
         [RATING["nsfw"], ASPECT["ultra_wide"], LENGTH["very_short"], IDENTITY["none"]]),
        ({"rating": "sensitive", "aspect_ratio": "0.4", "length": "medium", "identity": "strict"},
         [RATING["sensitive"], ASPECT["ultra_tall"], LENGTH["medium"], IDENTITY["strict"]]),
        ({"rating": "questionable", "width": 1024, "height": 1024, "length": "short"},
         [RATING["questionable"], ASPECT["square"], LENGTH["short"], IDENTITY["lax"]]),
        ({"rating": "explicit", "aspect_ratio": "16:9"}, [RATING["explicit"], ASPECT["wide"], LENGTH["long"], IDENTITY["lax"]]),
        ({"rating": "general", "aspect_ratio": "832x1216"}, [RATING["general"], ASPECT["tall"], LENGTH["long"], IDENTITY["lax"]]),
    ],
)  # fmt: skip
def test_dart_sft_token_ids(ggufs, options, expected):
    from dtg_cli.wordlevel import WordLevelTokenizer

    tokenizer = WordLevelTokenizer.from_gguf(ggufs["dart-moe"]["f16"])
    rating, aspect, length, identity = expected
    ids = tokenizer.encode(build(SFT, "1girl", **options))
    assert ids == [BOS, COPYRIGHT, COPYRIGHT_END, CHARACTER, CHARACTER_END, rating, aspect, length, GENERAL, ONE_GIRL, identity, INPUT_END]


def test_dart_conditions_are_single_tokens(ggufs):
    from dtg_cli.wordlevel import WordLevelTokenizer

    tokenizer = WordLevelTokenizer.from_gguf(ggufs["dart-moe"]["f16"])
    ids = tokenizer.encode(build(SFT, "1girl, cat ears", copyright="vocaloid", character="hatsune miku"))
    vocab = tokenizer.token_to_id
    assert ids[1:6] == [COPYRIGHT, vocab["vocaloid"], COPYRIGHT_END, CHARACTER, vocab["hatsune miku"]]
    assert ids[10:14] == [GENERAL, ONE_GIRL, vocab["cat ears"], IDENTITY["lax"]]
    assert tokenizer.encode(build(BASE, "cat ears, 1girl"))[-3:] == [GENERAL, ONE_GIRL, vocab["cat ears"]]


DELTA_GOLDEN = """quality: masterpiece
rating: safe
artist: <|empty|>
characters: <|empty|>
copyrights: <|empty|>
aspect ratio: 1.0
target: <|short|>
general: 1girl, solo, dragon girl, dragon horns, dragon tail<|input_end|>"""


def test_dantaggen_delta_matches_the_model_card_example():
    # The widget prompt of KBlueLeaf/DanTagGen-delta-rev2's model card.
    text = build(DELTA, "solo, dragon girl, 1girl, dragon horns, dragon tail", quality="masterpiece", rating="general",
                 aspect_ratio=1.0, length="short")  # fmt: skip
    assert text == DELTA_GOLDEN


def test_dantaggen_every_field():
    text = build(
        DTG, "cat ears, 2girls, multiple girls, smile", artist="ask (askzy)", character="hatsune miku, kagamine rin",
        copyright="vocaloid", rating="explicit", width=832, height=1216, length="very_long",
    )  # fmt: skip
    assert text == (
        "rating: explicit\nartist: ask (askzy)\ncharacters: hatsune miku, kagamine rin\ncopyrights: vocaloid\n"
        "aspect ratio: 0.7\ntarget: <|very_long|>\ngeneral: 2girls, multiple girls, cat ears, smile<|input_end|>"
    )


def test_dantaggen_defaults_and_no_people_count():
    # The author's runner keeps the ", " after an empty people-count list.
    assert build(DTG, "cat ears") == (
        "rating: safe\nartist: <|empty|>\ncharacters: <|empty|>\ncopyrights: <|empty|>\naspect ratio: 0.7\n"
        "target: <|long|>\ngeneral: , cat ears<|input_end|>"
    )
    assert build(DELTA).startswith("quality: <|empty|>\nrating: safe\n")


@pytest.mark.parametrize(
    "rating,word",
    [
        ("sfw", "safe"),
        ("general", "safe"),
        ("sensitive", "sensitive"),
        ("questionable", "nsfw"),
        ("nsfw", "nsfw"),
        ("explicit", "explicit"),
    ],
)
def test_dantaggen_rating_words(rating, word):
    assert f"\nrating: {word}\n" in "\n" + build(DTG, "1girl", rating=rating)


@pytest.mark.parametrize(
    "length,target", [("very_short", "very_short"), ("short", "short"), ("medium", "long"), ("long", "long"), ("very_long", "very_long")]
)
def test_dantaggen_targets(length, target):
    assert f"target: <|{target}|>" in build(DTG, "1girl", length=length)


@pytest.mark.parametrize(
    "aspect,text", [("ultra_tall", "0.5"), ("tall", "0.7"), ("square", "1.0"), ("wide", "1.5"), ("ultra_wide", "2.0"), ("4:3", "1.3")]
)
def test_dantaggen_aspect_ratio_format(aspect, text):
    assert f"aspect ratio: {text}\n" in build(DTG, "1girl", aspect_ratio=aspect)


def test_dantaggen_token_ids_through_llama_cpp(ggufs):
    from dtg_cli.llama import Model

    with Model(ggufs["dantaggen"]["f16"]) as model:
        ids = model.tokenize(DELTA_GOLDEN)
    assert ids[0] == 1  # <s>
    assert ids[-1] == 32000  # <|input_end|>
    assert ids.count(32001) == 3  # <|empty|> for artist, characters, copyrights
    assert 32003 in ids  # <|short|>


@pytest.mark.reference
@pytest.mark.parametrize(
    "options",
    [
        {"quality": "masterpiece", "rating": "general", "aspect_ratio": 1.0, "length": "short"},
        {"artist": "ask (askzy)", "character": "hatsune miku", "copyright": "vocaloid", "length": "very_long"},
        {},
    ],
)
def test_dantaggen_token_ids_match_the_hugging_face_tokenizer(checkpoints, ggufs, options):
    transformers = pytest.importorskip("transformers")
    from dtg_cli.llama import Model

    text = build(DELTA, "1girl, solo, dragon girl, looking at viewer", **options)
    reference = transformers.AutoTokenizer.from_pretrained(checkpoints["dantaggen"])(text)["input_ids"]
    with Model(ggufs["dantaggen"]["f16"]) as model:
        assert model.tokenize(text) == reference
