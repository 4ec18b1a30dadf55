"""Where backends keep what they build from a model (exported graphs), keyed by a digest of its weights."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch import nn

__all__ = ["default_cache_dir", "weights_digest"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASTVIT_CACHE") or Path.home() / ".cache" / "fastvit")


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

