"""Pretrained weights on the Hugging Face Hub: resolve which file to load and download it.

:func:`resolve_weights_file` picks ``checkpoint_path``, else ``cfg['file']``, else the Hub repo
``cfg['hf_hub_id']`` (``org/name`` or ``org/name@revision``; a ``cfg['hf_hub_revision']`` takes
precedence over the ``@revision``), downloaded with ``huggingface_hub.hf_hub_download`` into the
standard cache, so HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN apply: ``model.safetensors``
if the repo has it, else ``pytorch_model.bin`` (or exactly ``cfg['hf_hub_filename']`` when set).
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import CheckpointError, WeightsUnavailableError, first_line

__all__ = ["HUB_WEIGHT_FILES", "LOCAL_FILE_HINT", "download_from_hub", "read_hub_config",
           "resolve_weights_file", "split_hub_id"]

PathLike = str | os.PathLike[str]

HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weight files looked for in a Hub repo, best first."""
_HUB_CONFIG_FILE = "config.json"
LOCAL_FILE_HINT = (
    "pass a local weights file instead: create_model(name, checkpoint_path='path/to/weights.safetensors'), "
    "or --checkpoint PATH on the command line"
)


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``'org/name@revision'`` -> ``('org/name', 'revision')``; without ``@`` the revision is None (main)."""
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


def resolve_weights_file(
    cfg: Mapping, checkpoint_path: PathLike | None = None, cache_dir: PathLike | None = None
) -> Path:
    """The file to load: ``checkpoint_path``, else ``cfg['file']``, else the cfg's Hub weights
    (downloaded into the huggingface_hub cache, or found there)."""
    if checkpoint_path:
        return Path(checkpoint_path)
    if cfg.get("file"):
        return Path(cfg["file"])
    if not cfg.get("hf_hub_id"):
        raise CheckpointError(f"{_model_label(cfg)} has no pretrained weights to download; {LOCAL_FILE_HINT}")
    repo_id, revision = split_hub_id(cfg["hf_hub_id"])
    revision = cfg.get("hf_hub_revision") or revision
    filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_WEIGHT_FILES
    return download_from_hub(repo_id, filenames, revision, cache_dir)


def download_from_hub(
    repo_id: str, filenames: Sequence[str], revision: str | None = None, cache_dir: PathLike | None = None
) -> Path:
    """Local path of the first of ``filenames`` that the repo holds, downloaded into the
    huggingface_hub cache unless it is there already.

    Raises :class:`~fastvit.errors.WeightsUnavailableError` when a file is neither cached nor
    downloadable (offline, or the Hub unreachable), and CheckpointError for an unknown repo or
    revision, or a repo holding none of the files.
    """
    # imported here, not at the top: huggingface_hub pulls in its HTTP stack (a quarter of a second),
    # which a model loaded from a local file never needs
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    not_cached = []
    for filename in filenames:
        cache_only = bool(not_cached)  # the Hub has proved out of reach: no more requests and retries
        if not (cache_only or constants.is_offline_mode()) and not isinstance(
            try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision), str
        ):
            cache_only = not hub_reachable(constants.ENDPOINT)
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=cache_only
            )
            return Path(path)
        except LocalEntryNotFoundError:
            not_cached.append(filename)
        except EntryNotFoundError:  # the Hub answered: this repo has no such file
            continue
        except (HfHubHTTPError, HFValidationError) as error:  # unknown or gated repo, bad revision or id
            raise CheckpointError(
                f"cannot download from Hugging Face Hub repo {repo_id!r}{_at(revision)}: {first_line(error)}"
            ) from error
    if not_cached:
        raise WeightsUnavailableError(_unavailable_message(repo_id, revision, not_cached, cache_dir))
    raise CheckpointError(f"Hugging Face Hub repo {repo_id!r}{_at(revision)} has none of {', '.join(filenames)}")


@functools.cache
def hub_reachable(endpoint: str) -> bool:
    """Whether a connection to the ``endpoint``'s host opens within 5 s; always True behind a proxy,
    which is the host to reach then. Asked once before a download the cache cannot answer: for an
    unreachable Hub huggingface_hub retries each request for about 25 s before it gives up."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    if getproxies():
        return True
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except (OSError, ValueError):
        return False
    return True


def read_hub_config(repo_id: str, revision: str | None = None, cache_dir: PathLike | None = None) -> dict:
    """The ``config.json`` a timm Hub repo carries (``architecture``, ``num_classes``, ``pretrained_cfg``)."""
    path = download_from_hub(repo_id, (_HUB_CONFIG_FILE,), revision, cache_dir)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {_HUB_CONFIG_FILE} of {repo_id!r}: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{_HUB_CONFIG_FILE} of {repo_id!r} is not a JSON object")
    return config


def _unavailable_message(
    repo_id: str, revision: str | None, filenames: Iterable[str], cache_dir: PathLike | None
) -> str:
    from huggingface_hub import constants as hub_constants

    cache = cache_dir or hub_constants.HF_HUB_CACHE
    reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_constants.is_offline_mode() else "the Hub cannot be reached"
    return (
        f"cannot get {' or '.join(filenames)} of Hugging Face Hub repo {repo_id!r}{_at(revision)}: {reason} "
        f"and the local cache ({cache}) does not hold it. Download it once while online, or {LOCAL_FILE_HINT}"
    )


def _at(revision: str | None) -> str:
    return f" at revision {revision!r}" if revision else ""


def _model_label(cfg: Mapping) -> str:
    return ".".join(part for part in (cfg.get("architecture"), cfg.get("tag")) if part) or "this model"


