"""FastViT's building blocks, each in its train-time and inference form.

Module and parameter names follow timm's ``fastvit`` so that state dicts match key for key.
The blocks with train-time branches subclass :class:`~fastvit.models.reparam.ReparamBlock` and fold
themselves exactly into one convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .reparam import ReparamBlock, fuse_conv_bn, identity_kernel, pad_kernel


def make_divisible(value: float, divisor: int, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor``, never losing more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class ConvNorm(nn.Module):
    """A bias-free convolution followed by BatchNorm (one train-time branch)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        return fuse_conv_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gating from the spatial mean; it works at any input size."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_divisor: int = 8):
        super().__init__()
        reduced = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class LayerScale2d(nn.Module):
    """Per-channel learnable scale of an NCHW tensor."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (MCi3/MCi4 attention blocks)."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _layer_scale(dim: int, init_value: float | None) -> nn.Module:
    return LayerScale2d(dim, init_value) if init_value is not None else nn.Identity()


class MobileOneBlock(ReparamBlock):
    """Sum of an identity BN, k×k conv-BN branches and a 1×1 conv-BN branch, then SE and activation.

    ``group_size`` is the number of input channels per group: 0 for a dense conv, 1 for depthwise.
    """

    branch_names = ("identity", "conv_kxk", "conv_scale")

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        group_size: int = 0,
        use_se: bool = False,
        use_act: bool = True,
        use_scale_branch: bool = True,
        num_conv_branches: int = 1,
        act_layer: type[nn.Module] = nn.GELU,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.groups = in_chs // group_size if group_size else 1
        self.se = SqueezeExcite(out_chs, rd_divisor=1) if use_se else nn.Identity()
        self.reparam_conv = self.make_reparam_conv() if inference_mode else None
        self.identity = self.conv_kxk = self.conv_scale = None
        if not inference_mode:
            if in_chs == out_chs and stride == 1:
                self.identity = nn.BatchNorm2d(in_chs)
            if num_conv_branches > 0:
                self.conv_kxk = nn.ModuleList(
                    ConvNorm(in_chs, out_chs, kernel_size, stride, self.groups) for _ in range(num_conv_branches)
                )
            if kernel_size > 1 and use_scale_branch:
                self.conv_scale = ConvNorm(in_chs, out_chs, 1, stride, self.groups)
        self.act = act_layer() if use_act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = 0
        if self.identity is not None:
            out = self.identity(x)
        if self.conv_scale is not None:
            out += self.conv_scale(x)  # in place (as timm): one activation less at the training-time peak
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out += branch(x)
        return self.act(self.se(out))

    def branch_kernel_bias(self) -> tuple[Tensor, Tensor]:
        parts = []
        if self.identity is not None:
            eye = identity_kernel(self.in_chs, self.groups, self.kernel_size, like=self.identity.weight)
            parts.append(fuse_conv_bn(eye, self.identity))
        if self.conv_scale is not None:
            kernel, bias = self.conv_scale.fused_kernel_bias()
            parts.append((pad_kernel(kernel, self.kernel_size), bias))
        for branch in self.conv_kxk or ():
            parts.append(branch.fused_kernel_bias())
        return sum(k for k, _ in parts), sum(b for _, b in parts)


class ReparamLargeKernelConv(ReparamBlock):
    """A large-kernel conv-BN plus a small-kernel conv-BN on the same input (RepLKNet style).

    ``act_layer`` is None for the ImageNet FastViTs: Apple's original computed the activation and
    discarded it, so the published weights were trained without one. The MCi towers apply it.
    """

    branch_names = ("large_conv", "small_conv")

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int,
        group_size: int,
        small_kernel: int | None = None,
        use_se: bool = False,
        act_layer: type[nn.Module] | None = None,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.groups = in_chs // group_size if group_size else 1
        self.small_kernel = small_kernel
        self.reparam_conv = self.make_reparam_conv() if inference_mode else None
        self.large_conv = self.small_conv = None
        if not inference_mode:
            self.large_conv = ConvNorm(in_chs, out_chs, kernel_size, stride, self.groups)
            if small_kernel is not None:
                if small_kernel > kernel_size:
                    raise ValueError(f"small_kernel {small_kernel} is larger than kernel_size {kernel_size}")
                self.small_conv = ConvNorm(in_chs, out_chs, small_kernel, stride, self.groups)
        self.se = SqueezeExcite(out_chs, rd_ratio=0.25) if use_se else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self.large_conv(x)
            if self.small_conv is not None:
                out = out + self.small_conv(x)
        return self.act(self.se(out))

    def branch_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel, bias = self.large_conv.fused_kernel_bias()
        if self.small_conv is not None:
            small_kernel, small_bias = self.small_conv.fused_kernel_bias()
            kernel, bias = kernel + pad_kernel(small_kernel, self.kernel_size), bias + small_bias
        return kernel, bias


class RepMixer(ReparamBlock):
    """Token mixing ``x + gamma * (mixer(x) - norm(x))``, residual included, foldable into one depthwise conv."""

    branch_names = ("norm", "mixer", "layer_scale")

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        layer_scale_init_value: float | None = 1e-5,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.in_chs = self.out_chs = self.groups = dim
        self.kernel_size = kernel_size
        self.reparam_conv = self.make_reparam_conv() if inference_mode else None
        self.norm = self.mixer = self.layer_scale = None
        if not inference_mode:
            self.norm = MobileOneBlock(
                dim, dim, kernel_size, group_size=1, use_act=False, use_scale_branch=False, num_conv_branches=0
            )
            self.mixer = MobileOneBlock(dim, dim, kernel_size, group_size=1, use_act=False)
            self.layer_scale = _layer_scale(dim, layer_scale_init_value)

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def branch_kernel_bias(self) -> tuple[Tensor, Tensor]:
        mixer_kernel, mixer_bias = self.mixer.fused_kernel_bias()
        norm_kernel, norm_bias = self.norm.fused_kernel_bias()
        kernel, bias = mixer_kernel - norm_kernel, mixer_bias - norm_bias
        if isinstance(self.layer_scale, LayerScale2d):
            gamma = self.layer_scale.gamma
            kernel, bias = kernel * gamma.unsqueeze(-1), bias * gamma.flatten()
        return identity_kernel(self.in_chs, self.groups, self.kernel_size, like=kernel) + kernel, bias


class RepConditionalPosEnc(ReparamBlock):
    """Conditional positional encoding ``x + dwconv7x7(x)``, foldable into one depthwise conv."""

    branch_names = ("pos_enc",)

    def __init__(self, dim: int, kernel_size: int = 7, inference_mode: bool = False):
        super().__init__()
        self.in_chs = self.out_chs = self.groups = dim
        self.kernel_size = kernel_size
        self.reparam_conv = self.make_reparam_conv() if inference_mode else None
        self.pos_enc = None
        if not inference_mode:
            self.pos_enc = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pos_enc(x)

    def branch_kernel_bias(self) -> tuple[Tensor, Tensor]:
        weight = self.pos_enc.weight
        return identity_kernel(self.in_chs, self.groups, self.kernel_size, like=weight) + weight, self.pos_enc.bias


class ConvMlp(nn.Module):
    """Depthwise 7×7 conv-BN, then a 1×1 expand, activation and 1×1 project."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.conv = ConvNorm(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)
        for conv in (self.conv.conv, self.fc1, self.fc2):
            nn.init.trunc_normal_(conv.weight, std=0.02)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(self.conv(x))))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions of an NCHW tensor (head width 32)."""

    def __init__(self, dim: int, head_dim: int = 32, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(batch, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, -1, channels)))
        return out.transpose(1, 2).reshape(batch, channels, height, width)


class RepMixerBlock(nn.Module):
    """RepMixer token mixing followed by a residual ConvMlp."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-5,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, layer_scale_init_value, inference_mode)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, proj_drop)
        self.layer_scale = _layer_scale(dim, layer_scale_init_value)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Module):
    """Pre-norm self-attention and ConvMlp, each with layer scale and a residual."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-5,
    ):
        super().__init__()
        self.norm = norm_layer(dim)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = _layer_scale(dim, layer_scale_init_value)
        self.drop_path1 = _drop_path(drop_path)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, proj_drop)
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init_value)
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path2(self.layer_scale_2(self.mlp(x)))


class GlobalPool(nn.Module):
    """Global pooling to a flat vector: 'avg', 'max', 'avgmax', 'catavgmax', or '' for none. timm's
    'fast' names ('fast' or 'fastavg', 'fastmax', 'fastavgmax', 'fastcatavgmax') are accepted and
    compute the same."""

    pool_types = ("", "avg", "max", "avgmax", "catavgmax")

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        kind = "avg" if pool_type == "fast" else pool_type.removeprefix("fast")
        if kind not in self.pool_types:
            raise ValueError(f"global_pool must be one of {self.pool_types} (or those with timm's 'fast' prefix), "
                             f"got {pool_type!r}")
        self.pool_type, self.kind = pool_type, kind

    @property
    def feat_mult(self) -> int:
        return 2 if self.kind == "catavgmax" else 1

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "":
            return x
        if self.kind == "avg":
            return x.mean((2, 3))
        if self.kind == "max":
            return x.amax((2, 3))
        avg, peak = x.mean((2, 3)), x.amax((2, 3))
        return 0.5 * (avg + peak) if self.kind == "avgmax" else torch.cat((avg, peak), dim=1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class ClassifierHead(nn.Module):
    """Global pool, dropout and a linear classifier (Identity when num_classes is 0)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, pool_type)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = GlobalPool(pool_type)
        if num_classes and not self.global_pool.kind:
            raise ValueError("a classifier needs pooled features: pass a global_pool other than ''")
        self.num_features = self.in_features * self.global_pool.feat_mult
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)
