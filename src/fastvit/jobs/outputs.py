"""What a job computes per image (top-k classes, an embedding, feature maps) and the model call that
computes it (:func:`make_forward`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ..models.reparam import reparameterize
from ..runtime.predictor import BACKENDS, PRECISIONS, Predictor

__all__ = ["Embedding", "FeatureMaps", "Forward", "OutputKind", "TopK", "TorchForward", "make_forward"]

Forward = Callable[[Tensor], "Tensor | Sequence[Tensor]"]
"""A batch of preprocessed images (B, 3, H, W) on the CPU -> the model's output for it."""


class OutputKind(Protocol):
    """How a batch of model outputs becomes named arrays, one row per image."""

    def to_arrays(self, output: Tensor | Sequence[Tensor]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TopK:
    """A classifier's ``k`` most probable classes: ``indices`` (int64) and softmax ``probabilities``."""

    k: int = 5

    def to_arrays(self, logits: Tensor) -> dict[str, np.ndarray]:
        top = logits.float().softmax(dim=-1).topk(min(self.k, logits.shape[-1]))
        return {"indices": top.indices.cpu().numpy(), "probabilities": top.values.cpu().numpy()}


@dataclass(frozen=True)
class Embedding:
    """One vector per image, ``embedding`` (float32): the pooled pre-logits features of a model
    built with ``num_classes=0``, or with ``projected`` the output of a model that keeps its head
    (for a MobileCLIP tower, the CLIP image embedding). ``normalize`` scales each to unit length."""

    projected: bool = False
    normalize: bool = False

    def to_arrays(self, embeddings: Tensor) -> dict[str, np.ndarray]:
        embeddings = embeddings.float()
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        return {"embedding": embeddings.cpu().numpy()}


@dataclass(frozen=True)
class FeatureMaps:
    """The stage outputs of a ``features_only`` model: ``stage<i>`` (float32, C x H x W per image)."""

    out_indices: tuple[int, ...]

    def to_arrays(self, maps: Sequence[Tensor]) -> dict[str, np.ndarray]:
        return {f"stage{index}": m.float().cpu().numpy() for index, m in zip(self.out_indices, maps)}


class TorchForward:
    """The eval model, reparameterized (fused) in place and moved to ``device``, called under
    ``torch.inference_mode`` (in bfloat16 autocast for ``precision='bf16'``)."""

    def __init__(self, model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = reparameterize(model, inplace=True).eval().to(self.device)
        self.autocast = precision == "bf16"

    def __call__(self, images: Tensor) -> Tensor | Sequence[Tensor]:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            return self.model(images.to(self.device, non_blocking=True))


def make_forward(
    model: nn.Module, precision: str = "fp32", backend: str = "torch", device: str | torch.device = "cpu"
) -> Forward:
    """The model call of a batch job, for the ``--precision`` / ``--backend`` / ``--device`` flags:
    the fast :class:`~fastvit.runtime.predictor.Predictor` on the CPU or another runtime, else the fused
    model on the device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if torch.device(device).type == "cpu" or backend != "torch":  # the other runtimes run on the CPU
        return Predictor(model, precision=precision, backend=backend, inplace=True)
    return TorchForward(model, precision, device)
