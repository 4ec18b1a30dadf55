"""Shared helpers: models filled with the synthetic weights the golden files were made with."""

from __future__ import annotations

import torch

import fastvit
from synthetic_weights import synthetic_state_dict


def synthetic_model(name: str, **kwargs) -> torch.nn.Module:
    """``fastvit.create_model(name, **kwargs)`` in eval mode with synthetic weights (built on the
    meta device, so large variants cost no random initialisation)."""
    with torch.device("meta"):
        model = fastvit.create_model(name, **kwargs)
    model.load_state_dict(synthetic_state_dict(model.state_dict()), strict=True, assign=True)
    return model.eval()
