"""The bundled danbooru tag database: its build, lookups, search and suggestions."""

import zlib

import pytest

from dtg_cli.tagdb import DATA, TagDatabase, build, database
from tests.checkpoints import DATA as TEST_DATA


def test_shipped_database_is_the_build_of_the_bundled_csv(tmp_path):
    out = tmp_path / "tags.bin"
    info = build(TEST_DATA / "danbooru_tags.csv.gz", out)
    assert info["tags"] == 140782 and out.read_bytes() == DATA.read_bytes()
    assert len(zlib.compress(DATA.read_bytes())) < 1.7e6  # compact in the wheel (a zip): under half the CSV's 3.5 MB


def test_a_damaged_database_is_a_one_line_error(tmp_path):
    bad = tmp_path / "tags.bin"
    bad.write_bytes(b"nonsense")
    with pytest.raises(Exception, match="tag database cannot be read"):
        TagDatabase(bad)


def test_lookup_by_name_or_alias_in_any_spelling():
    db = database()
    assert db.lookup("Long_Hair").name == "long hair" and db.lookup("/lh").alias == "/lh" and db.lookup("longhair").count > 4_000_000
    assert db.lookup("ganyu_(genshin_impact)").category == "character" and db.lookup("^_^").name == "^_^"
    assert db.lookup("highres").category == "meta" and db.lookup("vocaloid").category == "copyright"
    assert db.lookup("") is None and db.lookup("not a tag at all") is None


def test_unknown_tags_get_suggestions():
    assert database().lookup("cat earz") is None
    assert database().suggest("cat earz")[0] == "cat ears"
    assert database().suggest("looking at veiwer")[0] == "looking at viewer"
    assert database().suggest("hatsune mik")[0] == "hatsune miku"
    # a known tag that a vocabulary lacks: its alias relations come first, and only tags the vocabulary holds
    assert database().suggest("dark-skinned female", allowed={"dark skin"}.__contains__) == ["dark skin"]


def test_search_globs_and_prefixes():
    db = database()
    assert [t.name for t in db.search("*hair*", 3)] == ["long hair", "short hair", "blonde hair"]
    assert [t.name for t in db.search("ganyu", 1)] == ["ganyu (genshin impact)"]
    assert all(t.category == "character" for t in db.search("*", 5, category="character"))
    counts = [t.count for t in db.search("cat*", 10)]
    assert counts == sorted(counts, reverse=True)
    assert db.search("zzzzqqqq") == []
