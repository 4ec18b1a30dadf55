"""Compute precision: whether this CPU runs bf16 natively, and bf16 numerics emulated at fp32 speed
(to study accuracy where the hardware has no bf16)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import FastViTError

__all__ = ["PRECISIONS", "Bf16Rounding", "PrecisionNotSupportedError", "bf16_is_native", "round_to_bf16_"]

PRECISIONS = ("fp32", "bf16")


class PrecisionNotSupportedError(FastViTError):
    """A precision this machine cannot run at speed (bf16 on a CPU without native bf16)."""


def bf16_is_native() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16, AVX-NE-CONVERT or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.no_grad()
def round_to_bf16_(model: nn.Module) -> None:
    """Round every float32 parameter and buffer of ``model`` to the nearest bfloat16, in place."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.to(torch.bfloat16).float())


class Bf16Rounding(TorchDispatchMode):
    """bf16 numerics at float32 speed: every float32 result of every op is rounded to bfloat16.

    With weights and input rounded too, this is what a bf16 network computes on native hardware,
    where each op reads bf16 operands, works in float32 and rounds its result to bf16; only the
    summation order inside an op can differ.
    """

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.enabled = enabled

    def __enter__(self):
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc):
        return super().__exit__(*exc) if self.enabled else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "is_view", False):  # a view of rounded values is rounded
            return out
        return _round_tree(out, inplace=func._schema.is_mutable)


def _round_tree(value, inplace: bool):
    if isinstance(value, Tensor):
        if value.dtype != torch.float32:
            return value
        return value.copy_(value.to(torch.bfloat16)) if inplace else value.to(torch.bfloat16).float()
    if isinstance(value, (list, tuple)):
        return type(value)(_round_tree(v, inplace) for v in value)
    return value

