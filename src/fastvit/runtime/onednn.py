"""The oneDNN engine: every convolution of a folded FastViT as one oneDNN call, with its weight
pre-packed per input size and the GELU or the residual add fused into it.

:func:`to_onednn` swaps the modules of a :func:`~fastvit.runtime.folds.fold_for_inference`
network in place; :func:`from_onednn` gives back the plain-op twin (for export and for the
compilers, which fuse oneDNN calls themselves).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor, nn

from ..models.layers import MobileOneBlock, ReparamLargeKernelConv, RepConditionalPosEnc
from .folds import FoldedAttentionBlock, FoldedRepMixerBlock, RepeatedDepthwiseConv2d, repeat_channels

__all__ = ["OneDnnConv2d", "OneDnnFusion", "from_onednn", "onednn_available", "to_onednn"]


PACKED_SIZES_KEPT = 4
"""Input sizes per convolution whose pre-packed weights the oneDNN engine keeps."""
_PACKING_LOCK = threading.Lock()


def onednn_available() -> bool:
    """Whether this torch build has the fused oneDNN convolution ops the oneDNN engine uses."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _gelu_algorithm(act: nn.Module) -> str | None:
    """oneDNN's name for this activation as a fused post-op, None if it cannot be fused."""
    if type(act) is nn.GELU:
        return "none" if act.approximate == "none" else "tanh"
    return None


class OneDnnConv2d(nn.Module):
    """A Conv2d run by oneDNN with its weight pre-packed for the first input it sees, and an
    optional GELU fused into it (``gelu`` is 'none' for the exact erf form or 'tanh')."""

    def __init__(self, conv: nn.Conv2d, gelu: str | None = None):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("the oneDNN engine needs explicit zero padding")
        self.register_buffer("weight", conv.weight.detach())  # shared: the plain conv is swapped out
        self.register_buffer("bias", conv.bias.detach() if conv.bias is not None else None)
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.repeats = getattr(conv, "repeats", 1)  # a RepeatedDepthwiseConv2d repeats its input channels
        self.attr, self.algorithm = ("gelu", gelu) if gelu is not None else ("none", "")
        self._packed: dict[tuple, Tensor] = {}

    def packed_weight(self, x: Tensor) -> Tensor:
        """The weight in the layout oneDNN picks for inputs of this channel count and size.

        The layout depends on the input size (a 1×1 map gets another one than a 8×8 map), and a
        weight in the wrong layout is reordered on every call, so each input size seen gets its
        own packed copy (the last few are kept)."""
        key = (x.dtype, *x.shape)
        packed = self._packed.get(key)
        if packed is None:
            with _PACKING_LOCK:  # streams may meet a new size together
                packed = self._packed.get(key)
                if packed is None:
                    packed = torch.ops.mkldnn._reorder_convolution_weight(
                        self.weight.to(x.dtype), self.padding, self.stride, self.dilation, self.groups, list(x.shape)
                    )
                    if len(self._packed) >= PACKED_SIZES_KEPT:
                        self._packed.pop(next(iter(self._packed)))
                    self._packed[key] = packed
        return packed

    def _apply(self, fn, recurse=True):  # a .to() or .float() invalidates the packed copies
        self._packed = {}
        return super()._apply(fn, recurse)

    def __getstate__(self):  # packed tensors are opaque to copy/pickle; they are re-made on use
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def forward(self, x: Tensor) -> Tensor:
        if self.repeats > 1:
            x = repeat_channels(x, self.repeats)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, [], self.algorithm,
        )

    def add_into(self, x: Tensor, residual: Tensor) -> Tensor:
        """``residual += conv(x)`` in one oneDNN call (sum post-op); returns ``residual``."""
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            residual, x, self.packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
            "add", 1.0, None, [], None,
        )

    def extra_repr(self) -> str:
        shape = tuple(self.weight.shape)
        post = f", post={self.attr}({self.algorithm})" if self.attr != "none" else ""
        return f"weight={shape}, stride={self.stride}, padding={self.padding}, groups={self.groups}{post}"


class OneDnnConvAct(nn.Module):
    """conv → SE → activation (MobileOneBlock, ReparamLargeKernelConv, RepCPE in folded form),
    with the activation fused into the conv when there is no SE between them."""

    def __init__(self, conv: nn.Conv2d, se: nn.Module, act: nn.Module):
        super().__init__()
        gelu = _gelu_algorithm(act) if isinstance(se, nn.Identity) else None
        self.conv = OneDnnConv2d(conv, gelu)
        self.se = se
        self.act = nn.Identity() if gelu is not None else act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.se(self.conv(x)))


class OneDnnMlp(nn.Module):
    """``x + fc2(act(fc1(conv(x))))`` in three oneDNN calls: dw conv, fc1 + GELU, fc2 + add."""

    def __init__(self, conv: nn.Conv2d, fc1: nn.Conv2d, act: nn.Module, fc2: nn.Conv2d):
        super().__init__()
        gelu = _gelu_algorithm(act)
        self.conv = OneDnnConv2d(conv)
        self.fc1 = OneDnnConv2d(fc1, gelu)
        self.act = nn.Identity() if gelu is not None else act
        self.fc2 = OneDnnConv2d(fc2)

    def forward(self, x: Tensor, residual_is_scratch: bool) -> Tensor:
        hidden = self.act(self.fc1(self.conv(x)))
        if residual_is_scratch and x.is_contiguous(memory_format=torch.channels_last) == hidden.is_contiguous(
            memory_format=torch.channels_last
        ):
            return self.fc2.add_into(hidden, x)
        return x + self.fc2(hidden)


class OneDnnRepMixerBlock(nn.Module):
    def __init__(self, block: FoldedRepMixerBlock):
        super().__init__()
        self.mixer = OneDnnConv2d(block.mixer)
        self.mlp = OneDnnMlp(block.conv, block.fc1, block.act, block.fc2)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.mixer(x), residual_is_scratch=True)  # the mixer's output is ours to overwrite


class OneDnnAttentionBlock(nn.Module):
    def __init__(self, block: FoldedAttentionBlock):
        super().__init__()
        self.norm, self.attn = block.norm, block.attn
        self.mlp = OneDnnMlp(block.conv, block.fc1, block.act, block.fc2)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x + self.attn(self.norm(x)), residual_is_scratch=True)


@torch.no_grad()
def to_onednn(folded: nn.Module) -> nn.Module:
    """Swap the convolutions of a :func:`fold_for_inference` model, in place, for oneDNN calls
    with pre-packed weights and fused GELU / residual add. CPU; float32, or bfloat16 where the CPU
    has native bf16 (convert the model before: the weights are packed in their own dtype)."""
    for name, child in folded.named_children():
        if isinstance(child, FoldedRepMixerBlock):
            setattr(folded, name, OneDnnRepMixerBlock(child))
        elif isinstance(child, FoldedAttentionBlock):
            setattr(folded, name, OneDnnAttentionBlock(child))
        elif isinstance(child, (MobileOneBlock, ReparamLargeKernelConv)) and child.reparam_conv is not None:
            setattr(folded, name, OneDnnConvAct(child.reparam_conv, child.se, child.act))
        elif isinstance(child, RepConditionalPosEnc) and child.reparam_conv is not None:
            setattr(folded, name, OneDnnConv2d(child.reparam_conv))
        elif isinstance(child, nn.Conv2d):
            continue  # the SE convs, on 1×1 maps: nothing to gain
        else:
            to_onednn(child)
    return folded


def from_onednn(module: nn.Module) -> nn.Module:
    """The plain-op twin of a :func:`to_onednn` model (used for export)."""
    for name, child in module.named_children():
        if isinstance(child, OneDnnConv2d):
            setattr(module, name, _plain_conv(child))
        elif isinstance(child, OneDnnConvAct):
            setattr(module, name, _PlainConvAct(child))
        elif isinstance(child, OneDnnRepMixerBlock):
            mlp = child.mlp
            setattr(module, name, FoldedRepMixerBlock(
                _plain_conv(child.mixer), _plain_conv(mlp.conv), _plain_conv(mlp.fc1), _mlp_act(mlp), _plain_conv(mlp.fc2)
            ))
        elif isinstance(child, OneDnnAttentionBlock):
            mlp = child.mlp
            setattr(module, name, FoldedAttentionBlock(
                child.norm, child.attn, _plain_conv(mlp.conv), _plain_conv(mlp.fc1), _mlp_act(mlp), _plain_conv(mlp.fc2)
            ))
        else:
            from_onednn(child)
    return module


def _plain_conv(conv: OneDnnConv2d) -> nn.Conv2d:
    out_chs, in_per_group, kh, kw = conv.weight.shape
    plain = nn.Conv2d(in_per_group * conv.groups, out_chs, (kh, kw), conv.stride, conv.padding, conv.dilation,
                      conv.groups, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return RepeatedDepthwiseConv2d(plain, conv.repeats) if conv.repeats > 1 else plain


def _gelu_module(conv: OneDnnConv2d) -> nn.Module:
    return nn.GELU(approximate="none" if conv.algorithm == "none" else "tanh") if conv.attr == "gelu" else nn.Identity()


def _mlp_act(mlp: OneDnnMlp) -> nn.Module:
    return _gelu_module(mlp.fc1) if mlp.fc1.attr == "gelu" else mlp.act


class _PlainConvAct(nn.Module):
    def __init__(self, block: OneDnnConvAct):
        super().__init__()
        self.conv, self.se = _plain_conv(block.conv), block.se
        self.act = _gelu_module(block.conv) if block.conv.attr == "gelu" else block.act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.se(self.conv(x)))


class OneDnnFusion:
    """TorchScript's oneDNN graph fuser (process-wide state) on inside the block (unless not
    ``enabled``), and back as it was once the last thread inside such a block has left it:
    threads running compiled pieces at once neither switch it off under each other nor leave it
    on for the rest of the process."""

    _lock = threading.Lock()
    _inside = 0  # threads inside an enabled block
    _before = False  # the fuser's state before the first of them entered

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            with OneDnnFusion._lock:
                if OneDnnFusion._inside == 0:
                    OneDnnFusion._before = torch.jit.onednn_fusion_enabled()
                    torch.jit.enable_onednn_fusion(True)
                OneDnnFusion._inside += 1

    def __exit__(self, *exc):
        if self.enabled:
            with OneDnnFusion._lock:
                OneDnnFusion._inside -= 1
                if OneDnnFusion._inside == 0:
                    torch.jit.enable_onednn_fusion(OneDnnFusion._before)
