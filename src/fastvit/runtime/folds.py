"""Exact inference-only folds: what remains to fold after timm's reparameterization.

timm's key layout has no place for these, so they happen only on the way to inference
(:func:`fold_for_inference`): the ConvMlp's BatchNorm into its depthwise conv, every layer scale
into the 1×1 conv or linear before it, the attention block's BatchNorm into ``qkv`` (which gains a
bias), each channel-doubling grouped conv (downsampling 7×7, final 3×3) recast as a depthwise
conv over repeated channels, the channel order it leaves absorbed by the next 1×1 conv, SE block
or classifier, and the SE blocks' 1×1 convs on pooled maps recast as linear layers on the pooled
vectors. Dropout and drop-path go away. The folded network computes the same function up
to float rounding (the tests check 1e-12 in float64).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.layers import (
    Attention,
    AttentionBlock,
    ClassifierHead,
    ConvMlp,
    LayerScale2d,
    MobileOneBlock,
    RepMixerBlock,
    SqueezeExcite,
)
from ..models.reparam import fuse_conv_bn, reparameterize

__all__ = [
    "FoldedAttention",
    "FoldedAttentionBlock",
    "FoldedRepMixerBlock",
    "LinearSqueezeExcite",
    "PermutedClassifierHead",
    "RepeatedDepthwiseConv2d",
    "fold_for_inference",
    "repeat_channels",
]


def _holding(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    """``layer``, built on the meta device (no random initialisation of what is replaced), given
    copies of ``weight`` and ``bias`` as its parameters. Not ``to_empty``: on the meta device it
    imports torch's symbolic-shape machinery, a second of every cold start."""
    layer.weight = nn.Parameter(weight.detach().clone())
    layer.bias = None if bias is None else nn.Parameter(bias.detach().clone())
    return layer


def _conv_like(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """A bias=True copy of ``conv``'s geometry holding ``weight`` and ``bias``."""
    geometry = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=True, device="meta")
    return _holding(geometry, weight, bias)


def _linear(weight: Tensor, bias: Tensor) -> nn.Linear:
    """A linear layer holding ``weight`` (out, in) and ``bias``."""
    return _holding(nn.Linear(weight.shape[1], weight.shape[0], device="meta"), weight, bias)


def _scale_of(layer_scale: nn.Module) -> Tensor | None:
    """The per-channel gamma of a LayerScale2d, None for Identity (no layer scale)."""
    return layer_scale.gamma.reshape(-1) if isinstance(layer_scale, LayerScale2d) else None


def _scaled_conv(conv: nn.Conv2d, gamma: Tensor | None) -> nn.Conv2d:
    """``gamma * conv(x)`` as one conv: the output channels of weight and bias scaled by gamma."""
    bias = conv.bias if conv.bias is not None else torch.zeros_like(conv.weight[:, 0, 0, 0])
    if gamma is None:
        return _conv_like(conv, conv.weight, bias)
    return _conv_like(conv, conv.weight * gamma.reshape(-1, 1, 1, 1), bias * gamma)


def _folded_mlp(mlp: ConvMlp, gamma: Tensor | None) -> tuple[nn.Conv2d, nn.Conv2d, nn.Module, nn.Conv2d]:
    """ConvMlp with its BatchNorm in the depthwise conv and the layer scale after it in fc2."""
    conv = _conv_like(mlp.conv.conv, *fuse_conv_bn(mlp.conv.conv.weight, mlp.conv.bn))
    return conv, _conv_like(mlp.fc1, mlp.fc1.weight, mlp.fc1.bias), copy.deepcopy(mlp.act), _scaled_conv(mlp.fc2, gamma)


class FoldedRepMixerBlock(nn.Module):
    """A fused RepMixerBlock with nothing left to fold: ``x = mixer(x); x + fc2(act(fc1(conv(x))))``.

    ``mixer`` is the RepMixer's depthwise conv (residual included), ``conv`` the ConvMlp's
    depthwise 7×7 with its BatchNorm folded in, ``fc2`` carries the block's layer scale.
    """

    def __init__(self, mixer: nn.Conv2d, conv: nn.Conv2d, fc1: nn.Conv2d, act: nn.Module, fc2: nn.Conv2d):
        super().__init__()
        self.mixer, self.conv, self.fc1, self.act, self.fc2 = mixer, conv, fc1, act, fc2

    @classmethod
    @torch.no_grad()
    def fold(cls, block: RepMixerBlock) -> FoldedRepMixerBlock:
        block.token_mixer.reparameterize()
        mixer = block.token_mixer.reparam_conv
        return cls(_conv_like(mixer, mixer.weight, mixer.bias), *_folded_mlp(block.mlp, _scale_of(block.layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.mixer(x)
        return x + self.fc2(self.act(self.fc1(self.conv(x))))


class FoldedAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, with ``qkv`` (possibly) biased and the
    layer scale in ``proj``. The output keeps the input's memory format without a copy."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int):
        super().__init__()
        self.qkv, self.proj, self.num_heads = qkv, proj, num_heads
        self.head_dim = proj.in_features // num_heads

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(batch, -1, channels))
        # (B, N, C) -> (B, C, H, W) as a channels-last view: the values of the reference's
        # out.transpose(1, 2).reshape(B, C, H, W), without the copy.
        return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class FoldedAttentionBlock(nn.Module):
    """An AttentionBlock with its BatchNorm folded into ``qkv`` (``norm`` is then Identity; a
    LayerNorm stays) and both layer scales folded into ``attn.proj`` and ``fc2``."""

    def __init__(
        self, norm: nn.Module, attn: FoldedAttention, conv: nn.Conv2d, fc1: nn.Conv2d, act: nn.Module, fc2: nn.Conv2d
    ):
        super().__init__()
        self.norm, self.attn, self.conv, self.fc1, self.act, self.fc2 = norm, attn, conv, fc1, act, fc2

    @classmethod
    @torch.no_grad()
    def fold(cls, block: AttentionBlock) -> FoldedAttentionBlock:
        attention: Attention = block.token_mixer
        qkv_weight = attention.qkv.weight
        qkv_bias = attention.qkv.bias if attention.qkv.bias is not None else torch.zeros_like(qkv_weight[:, 0])
        norm: nn.Module = copy.deepcopy(block.norm)
        if type(block.norm) is nn.BatchNorm2d:
            # qkv(s * x + t) = (W s) x + (W t + b) with s = γ / sqrt(σ² + ε), t = β − μ s.
            scale = block.norm.weight / torch.sqrt(block.norm.running_var + block.norm.eps)
            shift = block.norm.bias - block.norm.running_mean * scale
            qkv_bias = qkv_bias + qkv_weight @ shift
            qkv_weight = qkv_weight * scale
            norm = nn.Identity()
        proj_weight, proj_bias = attention.proj.weight, attention.proj.bias
        gamma = _scale_of(block.layer_scale_1)
        if gamma is not None:
            proj_weight, proj_bias = proj_weight * gamma[:, None], proj_bias * gamma
        attn = FoldedAttention(
            _linear(qkv_weight, qkv_bias),
            _linear(proj_weight, proj_bias),
            attention.num_heads,
        )
        return cls(norm, attn, *_folded_mlp(block.mlp, _scale_of(block.layer_scale_2)))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.fc2(self.act(self.fc1(self.conv(x))))


def repeat_channels(x: Tensor, repeats: int) -> Tensor:
    """``x`` concatenated with itself ``repeats`` times along the channels: channel k·C + c is
    channel c (a contiguous copy in either memory format, unlike an interleaving repeat)."""
    return torch.cat([x] * repeats, dim=1)


class RepeatedDepthwiseConv2d(nn.Conv2d):
    """A grouped conv with one input channel and ``m`` output channels per group, computed as a
    depthwise conv over ``m`` concatenated copies of the input, its outputs in *block order*.

    Output ``g·m + k`` of the grouped conv (input channel ``g``, kernel ``g·m + k``) becomes output
    ``k·C + g`` here: the same products and sums, the channels permuted by :attr:`permutation`
    (``out[:, j]`` is the grouped conv's channel ``permutation[j]``). The consumer absorbs the
    permutation into its own weights (see :func:`_recast_grouped_convs`), so nothing is copied
    back. FastViT's downsampling 7×7 and final 3×3 convs have this shape; oneDNN and ONNX Runtime
    run them as generic grouped convolutions, several times slower than a depthwise one.
    """

    def __init__(self, conv: nn.Conv2d, repeats: int):
        super().__init__(
            conv.out_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            groups=conv.out_channels, bias=conv.bias is not None, device="meta",
        )
        _holding(self, conv.weight, conv.bias)
        self.repeats = repeats

    @classmethod
    @torch.no_grad()
    def from_grouped(cls, conv: nn.Conv2d) -> RepeatedDepthwiseConv2d:
        repeats = conv.out_channels // conv.in_channels
        permutation = block_order(conv.in_channels, repeats).to(conv.weight.device)
        recast = cls(conv, repeats)
        recast.weight.copy_(conv.weight[permutation])
        if conv.bias is not None:
            recast.bias.copy_(conv.bias[permutation])
        return recast

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d and conv.groups == conv.in_channels and conv.groups > 1
            and conv.out_channels > conv.in_channels and conv.out_channels % conv.in_channels == 0
        )

    @property
    def permutation(self) -> Tensor:
        return block_order(self.out_channels // self.repeats, self.repeats)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(repeat_channels(x, self.repeats))


def block_order(groups: int, repeats: int) -> Tensor:
    """Interleaved channel ``g·repeats + k`` for each block-order position ``k·groups + g``."""
    return torch.arange(groups * repeats).reshape(groups, repeats).t().reshape(-1)


def _permute_inputs(conv: nn.Conv2d, permutation: Tensor) -> None:
    """Make a dense ``conv`` read channel-permuted input: input ``j`` is the old ``permutation[j]``."""
    if conv.groups != 1:
        raise ValueError("only a dense conv can absorb a channel permutation")
    conv.weight.copy_(conv.weight[:, permutation.to(conv.weight.device)])


def _permute_squeeze_excite(se: nn.Module, permutation: Tensor) -> None:
    """An SE block (mean, fc1, ReLU, fc2, sigmoid, scale: all per channel or dense) on permuted channels."""
    permutation = permutation.to(se.fc1.weight.device)
    _permute_inputs(se.fc1, permutation)
    se.fc2.weight.copy_(se.fc2.weight[permutation])
    se.fc2.bias.copy_(se.fc2.bias[permutation])


class PermutedClassifierHead(nn.Module):
    """A ClassifierHead fed channel-permuted features (``x[:, j]`` is feature ``permutation[j]``):
    pooling is per channel, so the pooled vector is put back in order (a gather of B × C values)
    and the classifier, the same module, sees what it always saw."""

    def __init__(self, head: nn.Module, permutation: Tensor):
        super().__init__()
        self.global_pool, self.drop, self.fc = head.global_pool, head.drop, head.fc
        self.in_features, self.num_features = head.in_features, head.num_features
        self.register_buffer("inverse", torch.argsort(permutation))

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.global_pool(x).index_select(1, self.inverse))
        return x if pre_logits else self.fc(x)


def _recast_grouped_convs(model: nn.Module) -> None:
    """Recast FastViT's channel-doubling grouped convs as :class:`RepeatedDepthwiseConv2d` where
    the consumer can absorb the channel permutation: the downsampling's 1×1 conv (and SE, for
    MCi), and the final conv's SE and classifier head (with channel-wise pooling)."""
    for module in list(model.modules()):
        if type(module).__name__ == "PatchEmbed":
            large, pointwise = module.proj
            conv = large.reparam_conv
            if (RepeatedDepthwiseConv2d.applies_to(conv) and isinstance(pointwise, MobileOneBlock)
                    and pointwise.reparam_conv is not None and pointwise.reparam_conv.groups == 1):
                recast = RepeatedDepthwiseConv2d.from_grouped(conv)
                if isinstance(large.se, SqueezeExcite):
                    _permute_squeeze_excite(large.se, recast.permutation)
                _permute_inputs(pointwise.reparam_conv, recast.permutation)
                large.reparam_conv = recast
    final_conv, head = getattr(model, "final_conv", None), getattr(model, "head", None)
    if (isinstance(final_conv, MobileOneBlock) and final_conv.reparam_conv is not None
            and RepeatedDepthwiseConv2d.applies_to(final_conv.reparam_conv) and isinstance(head, ClassifierHead)
            and head.global_pool.kind in ("avg", "max", "avgmax")):
        recast = RepeatedDepthwiseConv2d.from_grouped(final_conv.reparam_conv)
        if isinstance(final_conv.se, SqueezeExcite):
            _permute_squeeze_excite(final_conv.se, recast.permutation)
        elif not isinstance(final_conv.se, nn.Identity):
            return
        final_conv.reparam_conv = recast
        model.head = PermutedClassifierHead(head, recast.permutation.to(recast.weight.device))


class LinearSqueezeExcite(nn.Module):
    """A SqueezeExcite whose two 1×1 convs, which only ever see the pooled (B, C, 1, 1) map, are
    the linear layers they amount to on the pooled (B, C) vector (a matrix product instead of a
    convolution call on a 1×1 image)."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1, self.act = _linear(se.fc1.weight.flatten(1), se.fc1.bias), se.act
        self.fc2 = _linear(se.fc2.weight.flatten(1), se.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3))))).sigmoid()
        return x * gate[:, :, None, None]


def _fold_squeeze_excite(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is SqueezeExcite:
            setattr(module, name, LinearSqueezeExcite(child))
        else:
            _fold_squeeze_excite(child)


@torch.no_grad()
def fold_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The eval-mode ``model`` with every exact inference-only fold applied.

    Runs :func:`~fastvit.reparameterize` (timm's structural fusion), then replaces each
    RepMixerBlock and AttentionBlock by :class:`FoldedRepMixerBlock` /
    :class:`FoldedAttentionBlock`, recasts the channel-doubling grouped convs as
    :class:`RepeatedDepthwiseConv2d` and the SE blocks as :class:`LinearSqueezeExcite`. The
    result computes the same function as ``model.eval()`` (``forward``, ``forward_head``,
    pre-logits) up to float rounding, but its intermediate feature maps may have permuted
    channels and its state dict is not timm's: keep ``model`` for checkpoints and
    ``forward_intermediates``.
    """
    model = reparameterize(model, inplace=inplace).eval()
    _fold_blocks(model)
    _recast_grouped_convs(model)
    _fold_squeeze_excite(model)  # last: the recast permutes the SE convs' channels
    return model


def _fold_blocks(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, RepMixerBlock):
            setattr(module, name, FoldedRepMixerBlock.fold(child))
        elif isinstance(child, AttentionBlock):
            setattr(module, name, FoldedAttentionBlock.fold(child))
        elif isinstance(child, (nn.Dropout, nn.Dropout2d)) or type(child).__name__ == "DropPath":
            setattr(module, name, nn.Identity())
        else:
            _fold_blocks(child)
