"""Downloads from the Hugging Face Hub, honouring HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT and HF_HOME."""

from __future__ import annotations

import re
from pathlib import Path

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


def download_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """Fetch the files a conversion needs into the hub cache and return the snapshot directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILES)
    except GatedRepoError as e:
        raise DtgError(f"{repo_id} is gated: accept its terms on huggingface.co and set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise DtgError(f"{repo_id}: no such model repository on the hub (or it is private: set HF_TOKEN)") from e
    except RevisionNotFoundError as e:
        raise DtgError(f"{repo_id}: no revision {revision!r}") from e
    except LocalEntryNotFoundError as e:
        raise DtgError(
            f"{repo_id} is not in the Hugging Face cache and the hub cannot be reached (HF_HUB_OFFLINE is set or "
            f"the network is down); download it where there is a connection: hf download {repo_id}"
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise DtgError(f"{repo_id}: download failed ({e})") from e
    return Path(path)
