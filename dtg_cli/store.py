"""Where model files live, and getting them there.

DanTagGen repos publish GGUF files: dtg downloads the one asked for into the Hugging Face hub cache and
uses it from there, so a file fetched by another tool (or `hf download`) is found and works offline.
Dart repos publish safetensors only: dtg downloads the checkpoint into the hub cache and converts it,
once, into its own cache: `$DTG_HOME/models`, by default in the user's cache directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dtg_cli import families
from dtg_cli.errors import DtgError, ModelFileError
from dtg_cli.gguf_header import ArrayInfo, read_header, read_metadata
from dtg_cli.home import dtg_home
from dtg_cli.hub import cached_file, download_file
from dtg_cli.quants import DEFAULT_QUANT, FILE_TYPES, QUANTS
from dtg_cli.registry import ModelEntry, is_model_name, lookup


def models_dir() -> Path:
    return dtg_home() / "models"


def on_disk(entry: ModelEntry, quant: str) -> Path | None:
    """The GGUF of `entry` in `quant` if it is already here (no network)."""
    if entry.in_hub(quant):
        return cached_file(entry.repo, entry.gguf_filename(quant), entry.revision)
    path = models_dir() / entry.gguf_filename(quant)
    return path if path.is_file() else None


def pull(entry: ModelEntry, quant: str, progress=None, force: bool = False) -> Path:
    """Make the GGUF of `entry` in `quant` available locally and return its path. The converter (gguf-py,
    and transformers for --verify) is imported only when a file has to be made."""
    from dtg_cli.convert.pipeline import ConvertProgress

    progress = progress or ConvertProgress()
    found = None if force else on_disk(entry, quant)
    if found:
        return found
    if entry.in_hub(quant):
        filename = entry.gguf_filename(quant)
        progress.step(f"downloading {filename} of {entry.repo} from Hugging Face")
        return download_file(entry.repo, filename, entry.revision)
    if entry.gguf == "f16":
        from dtg_cli.convert.pipeline import atomic_path
        from dtg_cli.convert.quantize import quantize

        source = pull(entry, "f16", progress)
        target = models_dir() / entry.gguf_filename(quant)
        target.parent.mkdir(parents=True, exist_ok=True)
        progress.step(f"quantizing {source.name} to {quant.upper()} (once)")
        with atomic_path(target) as tmp:
            quantize(source, tmp, quant)
        return target
    from dtg_cli.convert import convert

    progress.step(
        f"{entry.name} is not on disk yet: downloading {entry.repo} from Hugging Face and converting it to {quant.upper()} (once)"
    )
    (path,) = convert(entry.repo, models_dir(), [quant], name=entry.name, revision=entry.revision, force=True, progress=progress)
    return path


@dataclass(frozen=True)
class Located:
    path: Path
    name: str
    entry: ModelEntry | None  # None for a GGUF file given by path


def resolve(model: str) -> ModelEntry | Path:
    """What `--model` names: a registry entry, or else the path of a GGUF file that exists."""
    if is_model_name(model):
        return lookup(model)
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    return path


def locate(model: str, quant: str = DEFAULT_QUANT, progress=None, download: bool = True) -> Located:
    """A registry name or a .gguf path, resolved to a file on disk (pulled first if it is missing)."""
    entry = resolve(model)
    if isinstance(entry, Path):
        return Located(entry, entry.stem, None)
    path = pull(entry, quant, progress) if download else on_disk(entry, quant)
    if path is None:
        raise DtgError(f"{entry.name} ({quant}) is not on disk: dtg models pull {entry.name} --quant {quant}")
    return Located(path, entry.name, entry)


def remove(entry: ModelEntry, quants: tuple[str, ...] = QUANTS) -> list[Path]:
    """Delete the GGUF files of `entry` (all quants, or those given); return what was deleted."""
    removed = []
    for quant in quants:
        if entry.in_hub(quant):
            removed += _remove_from_hub_cache(entry.repo, entry.gguf_filename(quant))
        else:
            path = models_dir() / entry.gguf_filename(quant)
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def _remove_from_hub_cache(repo_id: str, filename: str) -> list[Path]:
    """Remove one file from every cached revision of a repo, and its blob once nothing links to it."""
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir()
    except Exception:  # no cache directory yet: nothing to remove
        return []
    removed = []
    for repo in cache.repos:
        if repo.repo_id != repo_id or repo.repo_type != "model":
            continue
        blobs = set()
        for revision in repo.revisions:
            for f in revision.files:
                if f.file_name == filename:
                    f.file_path.unlink(missing_ok=True)
                    blobs.add(f.blob_path)
                    removed.append(f.file_path)
        still_linked = {f.blob_path for r in repo.revisions for f in r.files if f.file_path.exists()}
        for blob in blobs - still_linked:
            blob.unlink(missing_ok=True)
    return removed


def gguf_info(path: Path) -> dict:
    """What a GGUF says about itself: architecture, model family, sizes, vocabulary, quantization, source."""

    header = read_header(path)
    try:
        family = families.detect(header.metadata, path).name
    except ModelFileError:  # a GGUF of no family dtg runs: still described
        family = None

    def value(key: str):
        found = header.metadata.get(key)
        return None if isinstance(found, ArrayInfo) else found

    arch = value("general.architecture") or "?"
    file_type = value("general.file_type")
    names = {v: k.upper() for k, v in FILE_TYPES.items()}
    tokenizer = value("tokenizer.ggml.model")
    hf_json = "tokenizer.huggingface.json" in header.metadata
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    n_vocab = tokens.length if isinstance(tokens, ArrayInfo) else value(f"{arch}.vocab_size")
    params = sum(t.n_elements for t in header.tensors)
    info = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "name": value("general.name"),
        "architecture": arch,
        "family": family,
        "quant": names.get(file_type, f"file type {file_type}" if file_type is not None else None),
        "parameters": params,
        "layers": value(f"{arch}.block_count"),
        "hidden": value(f"{arch}.embedding_length"),
        "feed_forward": value(f"{arch}.feed_forward_length"),
        "heads": value(f"{arch}.attention.head_count"),
        "kv_heads": value(f"{arch}.attention.head_count_kv"),
        "experts": value(f"{arch}.expert_count"),
        "experts_used": value(f"{arch}.expert_used_count"),
        "context_length": value(f"{arch}.context_length"),
        "vocabulary": n_vocab,
        "tokenizer": "word-level (tokenizer.huggingface.json)" if hf_json and tokenizer in (None, "none") else tokenizer,
        "source_repo": value("dtg.source.repo") or value("general.source.repo_url"),
        "source_revision": value("dtg.source.revision"),
        "license": value("general.license"),
    }
    return {k: v for k, v in info.items() if v is not None}


def tag_vocabulary(model: str, quant: str = DEFAULT_QUANT) -> tuple[str, frozenset[str] | None, str | None]:
    """(name, tags, why not) for `dtg tags check`: the tags a one-token-per-tag model (Dart v2) can read,
    from its GGUF on disk (never downloaded for this). `tags` is None for a model that reads any text
    (DanTagGen's SentencePiece) and when no file of the model is on disk; `why not` then says which."""

    any_text = "reads any text (SentencePiece), so it has no tag list to check against"
    entry = resolve(model)
    if isinstance(entry, Path):
        path, name = entry, entry.stem
    else:
        if families.named(entry.family).reads_any_text:
            return entry.name, None, f"{entry.name} {any_text}"
        path = on_disk(entry, quant) or next((p for q in QUANTS if (p := on_disk(entry, q)) is not None), None)
        if path is None:
            return entry.name, None, f"{entry.name} is not on disk, so its vocabulary is not checked: dtg models pull {entry.name}"
        name = entry.name
    metadata = read_metadata(path)
    vocabulary = families.detect(metadata, path).tag_vocabulary(metadata)
    if vocabulary is None:
        return name, None, f"{name} {any_text}"
    return name, vocabulary, None
