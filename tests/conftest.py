import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.checkpoints import TINY, build_checkpoint, save_with_transformers


def pytest_configure(config):
    """No test touches the network or the user's caches. Set before collection: huggingface_hub reads
    these when it is first imported, which test modules do when they import transformers."""
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="dtg-test-hf-home-")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("DTG_DEBUG", None)


def pytest_unconfigure(config):
    """The session's hub caches hold converted models; they go with the session."""
    home = os.environ.get("HF_HOME", "")
    if "dtg-test-hf-home-" in home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def hub_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty hub cache of its own, read and written by the real huggingface_hub code."""
    from huggingface_hub import constants

    root = Path(os.environ["HF_HOME"]) / tmp_path_factory.mktemp("hub").name
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def dtg_home(tmp_path_factory, monkeypatch):
    """Each test gets an empty DTG_HOME (dtg's model cache)."""
    home = tmp_path_factory.mktemp("dtg-home")
    monkeypatch.setenv("DTG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight checkpoints of every architecture, built once per session."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {kind: build_checkpoint(root / kind, spec, seed=0, license="apache-2.0") for kind, spec in TINY.items()}


def convert_each(checkpoints: dict[str, Path], out: Path) -> dict[str, dict[str, Path]]:
    """Each checkpoint converted to F16, Q8_0 and Q6_K: {kind: {quant: path}}."""
    from dtg_cli.convert import convert

    quants = ["f16", "q8_0", "q6_k"]
    return {kind: dict(zip(quants, convert(directory, out, quants), strict=True)) for kind, directory in checkpoints.items()}


@pytest.fixture(scope="session")
def ggufs(checkpoints, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The tiny checkpoints as GGUF files (`convert_each`)."""
    return convert_each(checkpoints, tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="session")
def saved_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The same architectures written by the installed transformers' save_pretrained (transformers 5:
    rope_parameters, and DanTagGen's tokenizer as tokenizer.json only, with "legacy": true as in the 2024 repos)."""
    pytest.importorskip("torch", reason="save_pretrained needs torch: pip install torch==2.13.0")
    root = tmp_path_factory.mktemp("saved")
    return {kind: save_with_transformers(root / kind, spec, seed=1) for kind, spec in TINY.items()}


@pytest.fixture(scope="session")
def saved_ggufs(saved_checkpoints, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The transformers-saved checkpoints as GGUF files (`convert_each`)."""
    return convert_each(saved_checkpoints, tmp_path_factory.mktemp("saved-gguf"))


@pytest.fixture
def checkpoint_copy(checkpoints, tmp_path):
    """A writable copy of one fixture checkpoint, for tests that damage it."""

    def copy(kind: str) -> Path:
        return Path(shutil.copytree(checkpoints[kind], tmp_path / kind))

    return copy


@pytest.fixture
def dart(ggufs):
    """The Q8_0 tiny Dart v2 MoE."""
    return ggufs["dart-moe"]["q8_0"]


@pytest.fixture
def dtg(ggufs):
    """The Q8_0 tiny DanTagGen."""
    return ggufs["dantaggen"]["q8_0"]


@pytest.fixture(scope="session")
def models(ggufs) -> dict[str, Path]:
    """The Q8_0 tiny model of each family, for `dtg serve`."""
    return {"dart": ggufs["dart-moe"]["q8_0"], "dantaggen": ggufs["dantaggen"]["q8_0"], "tipo": ggufs["tipo"]["q8_0"]}


@pytest.fixture(scope="module")
def served(models):
    """`dtg serve` over `models` (loopback, a free port), for the tests of one module; it must exit 0 when stopped."""
    from tests.servers import Served

    with Served(list(models.values())) as server:
        yield server
    assert server.process.returncode == 0, server.stderr.decode()
