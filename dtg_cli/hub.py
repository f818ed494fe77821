"""Downloads from the Hugging Face Hub, honouring HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT and HF_HOME.

huggingface_hub is imported inside each function: it takes a tenth of a second to import, and a run
of a model already on disk never needs it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from dtg_cli.errors import DtgError

# What a conversion reads: weights, config, every tokenizer format, and the model card for its licence.
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "README.md",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not Path(text).exists()


_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _cache_only() -> bool:
    """Whether to ask huggingface_hub for what its cache holds and nothing more: without a proxy (which
    resolves names itself), a hub whose host name does not resolve cannot be reached, and huggingface_hub
    would retry for half a minute before saying so. With the network down, a cached file is still found."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in _PROXIES):
        return False  # offline: huggingface_hub answers at once; a proxy: it resolves the name
    host = urlsplit(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror:
        return True
    except (OSError, UnicodeError):
        return False
    return False


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's warnings (a line per retry) only with -v, for the length of one call: dtg says in
    one line what failed, and a Python caller's own logging set-up is left as it was."""
    from huggingface_hub.utils import logging as hub_logging

    if logging.getLogger("dtg").isEnabledFor(logging.INFO):
        yield
        return
    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(level)


def download_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """Fetch the files a conversion needs into the hub cache and return the snapshot directory."""
    from huggingface_hub import snapshot_download

    with _quiet_hub(), _hub_errors(repo_id, revision, what=repo_id):
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILES, local_files_only=_cache_only()))


def download_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Fetch one file of a repo into the hub cache (or find it there) and return its path."""
    from huggingface_hub import hf_hub_download

    with _quiet_hub(), _hub_errors(repo_id, revision, what=f"{filename} of {repo_id}", filename=filename):
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=_cache_only()))


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The path of a file already in the hub cache, without any network access; None if it is not there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, what: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line errors that say what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as e:
        raise DtgError(f"{repo_id} is gated: accept its terms on huggingface.co and set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise DtgError(f"{repo_id}: no such model repository on the hub (or it is private: set HF_TOKEN)") from e
    except RevisionNotFoundError as e:
        raise DtgError(f"{repo_id}: no revision {revision!r}") from e
    except LocalEntryNotFoundError as e:
        command = f"hf download {repo_id}" + (f" {filename}" if filename else "") + (f" --revision {revision}" if revision else "")
        raise DtgError(
            f"{what} is not in the Hugging Face cache and the hub cannot be reached (HF_HUB_OFFLINE is set or "
            f"the network is down); download it where there is a connection: {command}"
        ) from e
    except EntryNotFoundError as e:
        raise DtgError(f"{repo_id} has no file {filename}") from e
    except (HfHubHTTPError, OSError) as e:
        raise DtgError(f"{what}: download failed ({e})") from e
