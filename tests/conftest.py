"""Shared helpers: models filled with the synthetic weights the golden files were made with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import fastvit
from synthetic_weights import synthetic_state_dict


def synthetic_model(name: str, **kwargs) -> torch.nn.Module:
    """``fastvit.create_model(name, **kwargs)`` in eval mode with synthetic weights (built on the
    meta device, so large variants cost no random initialisation)."""
    with torch.device("meta"):
        model = fastvit.create_model(name, **kwargs)
    model.load_state_dict(synthetic_state_dict(model.state_dict()), strict=True, assign=True)
    return model.eval()


def save_checkpoint(path: Path) -> Path:
    """The synthetic fastvit_t8 weights as a safetensors file at ``path``."""
    save_file({key: value.contiguous() for key, value in synthetic_model("fastvit_t8").state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A local fastvit_t8 checkpoint (synthetic weights), shared by the tests that pass --checkpoint."""
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "fastvit_t8.safetensors")
