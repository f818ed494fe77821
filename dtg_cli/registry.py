"""The model registry: `models.toml`, loaded and validated in one place."""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from dtg_cli.errors import DtgError
from dtg_cli.families import FAMILIES, formats
from dtg_cli.quants import FILE_SUFFIXES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GGUF_SOURCES = ("convert", "download", "f16")


class UnknownModelError(DtgError):
    """A model name that is neither in the registry nor a GGUF file."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo: str
    family: str
    prompt: str
    architecture: str
    params: str
    # "convert": safetensors converted locally; "download": the repo publishes each quantization;
    # "f16": the repo publishes one F16 GGUF (`file`), quantized locally
    gguf: str
    revision: str | None = None
    license: str | None = None
    file: str | None = None  # the F16 GGUF's name in the repo (gguf = "f16")

    def in_hub(self, quant: str) -> bool:
        """Whether the file of `quant` is the repo's own, kept in the Hugging Face cache (else dtg's cache)."""
        return self.gguf == "download" or (self.gguf == "f16" and quant == "f16")

    def gguf_filename(self, quant: str) -> str:
        """The file name of one quantization in the repo (`in_hub`) or in dtg's cache."""
        if self.gguf == "download":
            return {"f16": "ggml-model-f16.gguf", "q8_0": "ggml-model-Q8_0.gguf", "q6_k": "ggml-model-Q6_K.gguf"}[quant]
        if self.gguf == "f16" and quant == "f16":
            return self.file
        return f"{self.name}-{FILE_SUFFIXES[quant]}.gguf"


def _default_path():
    """models.toml inside the installed package, or at the root of a source checkout."""
    installed = resources.files("dtg_cli").joinpath("models.toml")
    if installed.is_file():
        return installed
    return Path(__file__).resolve().parent.parent / "models.toml"


def parse_registry(text: str, source: str = "models.toml") -> dict[str, ModelEntry]:
    """Parse and validate a registry; every problem is reported with the model it concerns."""
    known_formats = formats()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DtgError(f"{source}: not valid TOML ({e})") from e
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise DtgError(f"{source}: no [models.NAME] tables")
    required = {"repo", "family", "prompt", "architecture", "params", "gguf"}
    optional = {"revision", "license", "file"}
    entries = {}
    for name, table in models.items():
        if not isinstance(table, dict):
            raise DtgError(f"{source}: models.{name} must be a table")
        missing = required - table.keys()
        unknown = table.keys() - required - optional
        if missing or unknown:
            what = [f"missing {', '.join(sorted(missing))}"] if missing else []
            what += [f"unknown key {', '.join(sorted(unknown))}"] if unknown else []
            raise DtgError(f"{source}: models.{name}: {'; '.join(what)}")
        if not all(isinstance(v, str) for v in table.values()):
            raise DtgError(f"{source}: models.{name}: every value must be a string")
        if table["gguf"] not in GGUF_SOURCES:
            raise DtgError(f"{source}: models.{name}: gguf must be one of {', '.join(GGUF_SOURCES)}")
        if (table["gguf"] == "f16") != ("file" in table):
            raise DtgError(f'{source}: models.{name}: file (the repo\'s F16 GGUF) goes with gguf = "f16", and only with it')
        if table["prompt"] not in known_formats:
            raise DtgError(f"{source}: models.{name}: unknown prompt format {table['prompt']!r} (known: {', '.join(known_formats)})")
        if known_formats[table["prompt"]].family != table["family"] or table["family"] not in {f.name for f in FAMILIES}:
            raise DtgError(f"{source}: models.{name}: prompt format {table['prompt']} is not one of family {table['family']!r}")
        entries[name] = ModelEntry(name=name, **table)
    return entries


@lru_cache(maxsize=1)
def registry() -> dict[str, ModelEntry]:
    """Every model dtg knows by name."""
    return parse_registry(_default_path().read_text(encoding="utf-8"))


def lookup(name: str) -> ModelEntry:
    """The entry for `name`, or an error that lists the known names (closest first)."""
    models = registry()
    if name in models:
        return models[name]
    close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(f"unknown model {name!r}: {hint}known models: {', '.join(models)}; or pass the path of a .gguf file")


def accepting(predicate) -> list[str]:
    """Names of the registered models whose prompt format satisfies `predicate`."""
    known_formats = formats()
    return [e.name for e in registry().values() if predicate(known_formats[e.prompt])]


def is_model_name(model: str) -> bool:
    """True when `--model` names a registry entry (or is meant to); False for a path to a .gguf file."""
    if model in registry():
        return True
    return not (model.endswith(".gguf") or "/" in model or "\\" in model or Path(model).exists())
