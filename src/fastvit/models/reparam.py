"""Structural reparameterization: the fusion maths and the walker that folds a whole model.

A block with train-time branches subclasses :class:`ReparamBlock`. It says how its branches add
up to one convolution (``fused_kernel_bias``) and which children those branches are
(``branch_names``); :meth:`ReparamBlock.reparameterize` does the rest, once. :func:`reparameterize`
walks any module tree and folds every such block it finds.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def fuse_conv_bn(weight: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm into the bias-free convolution before it."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel_size: int, like: Tensor) -> Tensor:
    """The k×k grouped-conv kernel that maps a tensor onto itself."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    centre = kernel_size // 2
    kernel[torch.arange(channels), torch.arange(channels) % in_per_group, centre, centre] = 1
    return kernel


def pad_kernel(kernel: Tensor, kernel_size: int) -> Tensor:
    """Zero-pad a smaller centred kernel to kernel_size × kernel_size."""
    pad = (kernel_size - kernel.shape[-1]) // 2
    return nn.functional.pad(kernel, [pad] * 4)


class ReparamBlock(nn.Module):
    """A block that is a sum of linear branches at train time and one convolution at inference.

    Subclasses set the geometry in ``__init__`` (``in_chs``, ``out_chs``, ``kernel_size``,
    ``stride``, ``groups``), build ``reparam_conv`` directly when ``inference_mode`` is set, and
    implement ``branch_kernel_bias``.
    """

    # Not annotated: TorchScript cannot read class annotations made strings by ``from __future__``.
    branch_names = ()  # names of the train-time branch modules
    stride = 1
    groups = 1

    def make_reparam_conv(self) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_chs, self.out_chs, self.kernel_size, stride=self.stride,
            padding=self.kernel_size // 2, groups=self.groups, bias=True,
        )

    def branch_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Kernel and bias of the one convolution equal to the train-time branches (eval mode)."""
        raise NotImplementedError

    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Kernel and bias of this block as one convolution, folded already or not."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        return self.branch_kernel_bias()

    @property
    def is_fused(self) -> bool:
        return self.reparam_conv is not None

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the train-time branches by one convolution. A second call does nothing."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self.branch_kernel_bias()
        conv = self.make_reparam_conv().to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        for name in self.branch_names:
            setattr(self, name, None)
        self.reparam_conv = conv


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every :class:`ReparamBlock` in ``model`` into its inference form.

    The result computes the same function as ``model`` in eval mode. By default ``model`` is left
    untouched and a folded copy is returned; folding a folded model changes nothing.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"reparameterize takes a model (a torch.nn.Module), got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    _fold_children(model)
    return model


def _fold_children(module: nn.Module) -> None:
    for child in module.children():
        if isinstance(child, ReparamBlock):
            child.reparameterize()
        else:
            _fold_children(child)
