"""Deterministic stand-in weights for any FastViT state dict, drawn from key names and shapes.

Shared by the golden-output script (run in the timm reference environment) and the tests, so both
fill their models with identical tensors without shipping any weights. Each tensor comes from its
own generator seeded by its key, so adding or removing keys leaves the other tensors unchanged.
Scales are chosen so activations stay O(1) through the deepest variants while every BN carries
non-trivial running statistics and every layer scale matters.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import torch


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def synthetic_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    rng = _rng(key)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(0, dtype=torch.long)
    if leaf == "running_var":
        values = rng.uniform(0.5, 2.0, shape)
    elif leaf == "running_mean":
        values = rng.normal(0.0, 0.2, shape)
    elif leaf == "gamma":
        values = rng.uniform(0.05, 0.3, shape)
    elif leaf == "bias":
        values = rng.normal(0.0, 0.1, shape)
    elif len(shape) == 1:  # BatchNorm / LayerNorm weight
        values = rng.uniform(0.6, 1.2, shape)
    else:  # conv or linear weight: unit gain
        fan_in = int(np.prod(shape[1:]))
        values = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def model_key(key: str) -> str:
    """features_only models flatten their top level: 'stem_0.x' holds the weights of 'stem.0.x'."""
    return re.sub(r"^(stem|stages)_(\d+)", r"\1.\2", key)


def synthetic_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of ``reference`` and synthetic values (the same
    values for a features_only model as for the full model)."""
    return {key: synthetic_tensor(model_key(key), tuple(value.shape)) for key, value in reference.items()}


def synthetic_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A fixed image-like batch (roughly normalised pixel statistics)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(0.0, 1.0, shape).astype(np.float32))
