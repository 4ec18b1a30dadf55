"""Where backends keep what they build from a model (exported graphs), keyed by a digest of its
weights and layers, and checked against the digests of its files each time it is used."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

__all__ = ["cached_entry", "default_cache_dir", "model_digest"]

STALE_SCRATCH_SECONDS = 3600
"""A build's scratch folder this old belongs to a process that was killed mid-build."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASTVIT_CACHE") or Path.home() / ".cache" / "fastvit")


def model_digest(model: nn.Module) -> str:
    """A digest of what a graph converted from ``model`` computes: its weights, its layers with their
    settings (``repr``: pooling, activations, strides) and, for a features_only model, the stages it
    returns. Models with the same weights but other outputs get graphs of their own."""
    digest = hashlib.sha256()
    digest.update(repr(model).encode())
    digest.update(str(getattr(model, "out_indices", None)).encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _record_path(files: Sequence[Path]) -> Path:
    return files[0].with_name(files[0].name + ".sha256")


def _intact(files: Sequence[Path]) -> bool:
    try:
        recorded = json.loads(_record_path(files).read_text(encoding="utf-8"))
        return all(recorded.get(file.name) == _file_sha256(file) for file in files)
    except (OSError, ValueError, AttributeError):  # missing or unreadable files, a damaged record
        return False


def _remove_stale_scratch(files: Sequence[Path]) -> None:
    for scratch in files[0].parent.glob(f".{files[0].stem}-*"):
        try:
            if scratch.is_dir() and time.time() - scratch.stat().st_mtime > STALE_SCRATCH_SECONDS:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError:  # removed by another process meanwhile
            pass


def cached_entry(files: Sequence[Path], build: Callable[[], None]) -> None:
    """Make sure the files of one cache entry are on disk as they were built: each is checked against
    the SHA-256 recorded when it was written, and the entry is rebuilt (``build`` writes every file,
    each replaced atomically) when one is missing, truncated or damaged. Processes that build the
    same entry at once each write whole files, so a reader never sees a partial one."""
    if _intact(files):
        return
    files[0].parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(files)
    build()
    record = {file.name: _file_sha256(file) for file in files}
    descriptor, temporary = tempfile.mkstemp(dir=files[0].parent, prefix=f".{files[0].name}-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.chmod(temporary, 0o644)
        os.replace(temporary, _record_path(files))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
