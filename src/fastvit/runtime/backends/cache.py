"""Where backends keep what they build from a model (exported graphs), keyed by a digest of its
weights and layers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch import nn

__all__ = ["default_cache_dir", "model_digest"]


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

