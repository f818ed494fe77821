"""The family interface: detection from a GGUF, and a third family that plugs in without engine changes."""

from dataclasses import dataclass

import pytest

from dtg_cli import families
from dtg_cli.errors import ModelFileError, UsageError
from dtg_cli.family import ONE_STEP, Family, Step
from dtg_cli.gguf_header import read_metadata
from dtg_cli.prompt import Control, Prompt
from dtg_cli.settings import Request, Sampling
from dtg_cli.tokenizers import TagTokenizer
from dtg_cli.wordlevel import HF_JSON_KEY


@pytest.mark.parametrize("kind, family", [("dart-moe", "dart-v2"), ("dart-dense", "dart-v2"), ("dantaggen", "dantaggen")])
def test_each_gguf_is_read_by_its_family(ggufs, kind, family):
    for path in ggufs[kind].values():
        assert families.detect(read_metadata(path), path).name == family


def test_a_gguf_no_family_reads_is_one_line():
    with pytest.raises(ModelFileError, match="no model family dtg runs reads"):
        families.detect({"tokenizer.ggml.model": "gpt2"}, "x.gguf")


def test_every_format_belongs_to_its_family_and_every_registry_entry_to_a_format():
    from dtg_cli.registry import registry

    for family in families.FAMILIES:
        assert all(f.family == family.name for f in family.formats)
    for entry in registry().values():
        assert families.formats()[entry.prompt].family == entry.family


@dataclass(frozen=True)
class PlainTags:
    """A made-up prompt: the tags between <general> markers, and no conditions."""

    name: str = "plain-tags"
    family: str = "plain"
    stop: tuple[str, ...] = ("</general>",)

    @property
    def accepts(self) -> frozenset[str]:
        return frozenset()

    def steps(self, request: Request) -> tuple[Step, ...]:
        return ONE_STEP

    def build(
        self, request: Request, general: list[str], step: Step | None = None, nl: str | None = None, written: str | None = None
    ) -> Prompt:
        return Prompt(Control("<|bos|>"), Control("<general>"), ", ".join(general))

    def conditions(self, request: Request) -> dict:
        return {}

    def tag_count_range(self, length: str | None) -> tuple[int, int | None]:
        return 0, None

    def sentence_range(self, length: str | None) -> tuple[int, int | None]:
        return 0, None


class PlainFamily(Family):
    name = "plain"
    formats = (PlainTags(),)
    sampling = Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_new_tokens=7)
    reads_any_text = False

    def reads(self, metadata) -> bool:
        return metadata.get("general.name") == "plain-model"

    def tokenizer(self, model) -> TagTokenizer:
        return TagTokenizer(model.metadata(HF_JSON_KEY))

    def tag_vocabulary(self, metadata):
        return TagTokenizer(metadata[HF_JSON_KEY]).vocabulary


def test_a_third_family_generates_through_the_engine(checkpoints, tmp_path, monkeypatch):
    from dtg_cli.convert import convert
    from dtg_cli.engine import Generator

    (path,) = convert(checkpoints["dart-moe"], tmp_path, "q8_0", name="plain-model")
    monkeypatch.setattr(families, "FAMILIES", [PlainFamily(), *families.FAMILIES])
    with Generator(path) as generator:
        assert generator.family.name == "plain" and generator.format.name == "plain-tags"
        (result,) = generator.generate(Request.from_options("1girl, cat ears"))
    tok = TagTokenizer(read_metadata(path)[HF_JSON_KEY])
    assert result.prompt == "<|bos|><general>1girl, cat ears"
    assert result.input_ids == [0, 6, tok.token_id("1girl"), tok.token_id("cat ears")]
    assert result.sampling["temperature"] == 0.0 and len(result.output_ids) <= 7 and result.conditions == {}
    # greedy: the first new token is the argmax of the model's logits after the prompt
    from dtg_cli.llama import Context, Model

    with Model(path, n_gpu_layers=0) as model, Context(model, n_ctx=64, n_batch=16) as ctx:
        assert result.output_ids[0] == int(ctx.logits(result.input_ids)[-1].argmax())
    with pytest.raises(UsageError, match="^rating is not used") as info:  # the library names the field
        with Generator(path) as generator:
            generator.check(Request.from_options("1girl", rating="general"))
    assert info.value.as_flags().startswith("--rating is not used")  # the CLI names the flag
