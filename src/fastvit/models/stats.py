"""Model statistics computed from the network itself: parameters, MACs and activations.

MACs and activations follow the conventions behind timm's model cards and benchmark CSVs
(fvcore's counters): one multiply-accumulate per weight use in convolutions and matrix
products (attention's included, as in timm's PyTorch 2.4 CSVs), two per element for eval-mode
BatchNorm and five for LayerNorm; activations are the output elements of convolutions and
matrix products. Element-wise ops and pooling count as zero. The forward pass runs on the meta
device, so even the largest variant costs no memory or compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .reparam import reparameterize

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape)


def _conv(args, out) -> tuple[int, int]:
    weight = args[1]
    return out.numel() * _numel(weight.shape[1:]), out.numel()


def _matmul(args, out) -> tuple[int, int]:
    inner = args[-2].shape[-1] if args[-2].ndim else 1
    return out.numel() * inner, out.numel()


def _addmm(args, out) -> tuple[int, int]:
    return out.numel() * args[1].shape[-1], out.numel()


def _batch_norm(args, out) -> tuple[int, int]:
    return 2 * args[0].numel(), 0


def _layer_norm(args, out) -> tuple[int, int]:
    return 5 * args[0].numel(), 0


_COUNTERS = {
    aten.convolution: _conv,
    aten.mm: _matmul,
    aten.bmm: _matmul,
    aten.addmm: _addmm,
    aten.native_batch_norm: _batch_norm,
    aten._native_batch_norm_legit_no_training: _batch_norm,
    aten.native_layer_norm: _layer_norm,
}


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.macs = 0
        self.activations = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        counter = _COUNTERS.get(func.overloadpacket)
        if counter is not None:
            macs, activations = counter(args, out)
            self.macs += macs
            self.activations += activations
        return out


def count_ops(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs, activations) of one eval-mode forward pass on a single image of ``input_size``."""
    model = model.to("meta").eval()
    with torch.no_grad(), _OpCounter() as counter:
        model(torch.zeros((1, *input_size), device="meta"))
    return counter.macs, counter.activations


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelStats:
    name: str
    input_size: tuple[int, int, int]
    params: int
    macs: int
    activations: int
    fused_params: int
    fused_macs: int
    fused_activations: int

    def as_row(self) -> dict[str, float | str]:
        return {
            "model": self.name,
            "input": "x".join(map(str, self.input_size[1:])),
            "params (M)": round(self.params / 1e6, 2),
            "GMACs": round(self.macs / 1e9, 2),
            "activations (M)": round(self.activations / 1e6, 2),
            "fused params (M)": round(self.fused_params / 1e6, 2),
            "fused GMACs": round(self.fused_macs / 1e9, 2),
            "fused activations (M)": round(self.fused_activations / 1e6, 2),
        }


def model_info(name: str, input_size: tuple[int, ...] | None = None, **kwargs) -> ModelStats:
    """Params, MACs and activations of ``name`` at ``input_size`` ((C, H, W) or (H, W); default: its
    pretrained cfg's), in the train-time form that model cards report and in the fused inference form."""
    from .registry import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    input_size = tuple(input_size or model.pretrained_cfg["input_size"])
    if len(input_size) == 2:
        input_size = (model.in_chans, *input_size)
    fused = reparameterize(model)
    return ModelStats(
        name, input_size, count_params(model), *count_ops(model, input_size),
        count_params(fused), *count_ops(fused, input_size),
    )
