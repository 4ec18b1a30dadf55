"""The FastViT network: convolutional stem, stages of RepMixer or attention blocks, head.

``forward_features`` / ``forward_head`` / ``forward_intermediates`` and the ``features_only``
wrapper follow timm's contract, and every state-dict key is the one timm uses.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    AttentionBlock,
    ClassifierHead,
    LayerNorm2d,
    MobileOneBlock,
    RepConditionalPosEnc,
    RepMixerBlock,
    ReparamLargeKernelConv,
)
from .variants import Architecture

_NORM_LAYERS = {"batchnorm": nn.BatchNorm2d, "layernorm": partial(LayerNorm2d, eps=1e-5)}


def convolutional_stem(
    in_chs: int, out_chs: int, use_scale_branch: bool = True, inference_mode: bool = False
) -> nn.Sequential:
    """Three MobileOne blocks: 3×3/2 dense, 3×3/2 depthwise, 1×1 dense (H/4 × W/4 out)."""
    common = dict(use_scale_branch=use_scale_branch, inference_mode=inference_mode)
    return nn.Sequential(
        MobileOneBlock(in_chs, out_chs, 3, stride=2, **common),
        MobileOneBlock(out_chs, out_chs, 3, stride=2, group_size=1, **common),
        MobileOneBlock(out_chs, out_chs, 1, **common),
    )


class PatchEmbed(nn.Module):
    """Downsampling between stages: a large-kernel grouped conv, then a 1×1 MobileOne block."""

    def __init__(
        self,
        patch_size: int,
        stride: int,
        in_chs: int,
        embed_dim: int,
        lkc_use_act: bool = False,
        use_se: bool = False,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(
                in_chs, embed_dim, patch_size, stride, group_size=1, small_kernel=3, use_se=use_se,
                act_layer=nn.GELU if lkc_use_act else None, inference_mode=inference_mode,
            ),
            MobileOneBlock(embed_dim, embed_dim, 1, inference_mode=inference_mode),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class FastVitStage(nn.Module):
    """Optional downsample, optional RepCPE positional encoding, then a run of blocks."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        depth: int,
        token_mixer: str,
        downsample: bool,
        se_downsample: bool = False,
        pos_emb: bool = False,
        mlp_ratio: float = 4.0,
        kernel_size: int = 3,
        down_patch_size: int = 7,
        down_stride: int = 2,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        proj_drop_rate: float = 0.0,
        drop_path_rates: Sequence[float] = (),
        layer_scale_init_value: float | None = 1e-5,
        lkc_use_act: bool = False,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = PatchEmbed(
                down_patch_size, down_stride, dim, dim_out, lkc_use_act, se_downsample, inference_mode
            )
        elif dim != dim_out:
            raise ValueError(f"a stage without downsample keeps its width, got {dim} -> {dim_out}")
        else:
            self.downsample = nn.Identity()
        self.pos_emb = RepConditionalPosEnc(dim_out, inference_mode=inference_mode) if pos_emb else nn.Identity()
        drop_path_rates = list(drop_path_rates) or [0.0] * depth
        if token_mixer == "repmixer":
            blocks = [
                RepMixerBlock(
                    dim_out, kernel_size, mlp_ratio, proj_drop=proj_drop_rate, drop_path=rate,
                    layer_scale_init_value=layer_scale_init_value, inference_mode=inference_mode,
                )
                for rate in drop_path_rates
            ]
        elif token_mixer == "attention":
            blocks = [
                AttentionBlock(
                    dim_out, mlp_ratio, norm_layer=norm_layer, proj_drop=proj_drop_rate, drop_path=rate,
                    layer_scale_init_value=layer_scale_init_value,
                )
                for rate in drop_path_rates
            ]
        else:
            raise ValueError(f"unknown token mixer {token_mixer!r}: expected 'repmixer' or 'attention'")
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pos_emb(self.downsample(x))
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """Which outputs to take: all (None), the last n (int), or the given, possibly negative, indices."""
    if indices is None:
        take = list(range(num_features))
    elif isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"cannot take the last {indices} of {num_features} feature maps")
        take = list(range(num_features - indices, num_features))
    else:
        try:
            indices = [operator.index(index) for index in indices]
        except TypeError:
            raise TypeError(f"feature indices are whole numbers, got {indices!r}") from None
        if not indices:
            raise ValueError("no feature index given (out_indices is empty)")
        take = []
        for index in indices:
            if not -num_features <= index < num_features:
                raise ValueError(f"feature index {index} is out of range for {num_features} stages")
            take.append(index % num_features)
    return take, max(take)


class FastVit(nn.Module):
    """FastViT (arXiv 2303.14189) and the MobileCLIP image towers built on it."""

    __jit_unused_properties__ = ["default_cfg"]  # torch.jit.script compiles the forward only

    def __init__(
        self,
        arch: Architecture,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-5,
        repmixer_kernel_size: int = 3,
        down_patch_size: int = 7,
        down_stride: int = 2,
        cls_ratio: float = 2.0,
        inference_mode: bool = False,
    ):
        super().__init__()
        self.arch = arch
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.pretrained_cfg: dict = {}
        self.stem = convolutional_stem(in_chans, arch.embed_dims[0], arch.stem_use_scale_branch, inference_mode)

        rates = torch.linspace(0, drop_path_rate, sum(arch.layers), device="cpu").split(list(arch.layers))
        stages, self.feature_info = [], []
        prev_dim, reduction = arch.embed_dims[0], 4
        for i, (depth, dim) in enumerate(zip(arch.layers, arch.embed_dims)):
            downsample = arch.downsamples[i] or prev_dim != dim
            stages.append(
                FastVitStage(
                    prev_dim, dim, depth, arch.token_mixers[i], downsample,
                    se_downsample=arch.se_downsamples[i], pos_emb=arch.pos_embs[i], mlp_ratio=arch.mlp_ratio,
                    kernel_size=repmixer_kernel_size, down_patch_size=down_patch_size, down_stride=down_stride,
                    norm_layer=_NORM_LAYERS[arch.attn_norm], proj_drop_rate=proj_drop_rate,
                    drop_path_rates=rates[i].tolist(), layer_scale_init_value=layer_scale_init_value,
                    lkc_use_act=arch.lkc_use_act, inference_mode=inference_mode,
                )
            )
            reduction *= 2 if downsample else 1
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
            prev_dim = dim
        self.stages = nn.Sequential(*stages)
        self.num_stages = len(stages)

        self.num_features = int(prev_dim * cls_ratio)
        self.final_conv = MobileOneBlock(
            prev_dim, self.num_features, 3, group_size=1, use_se=True, inference_mode=inference_mode
        )
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by name, for layer-wise learning-rate decay: the stem, then each stage
        (coarse) or each stage's downsampling, position encoding and block (fine), as timm's."""
        if coarse:
            return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}
        return {
            "stem": r"^stem",
            "blocks": [
                (r"^stages\.(\d+).downsample", (0,)),
                (r"^stages\.(\d+).pos_emb", (0,)),
                (r"^stages\.(\d+)\.\w+\.(\d+)", None),
            ],
        }

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exempt from weight decay: none, as in timm."""
        return set()

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); optionally change the pooling."""
        reference = next(self.parameters())
        self.head.reset(num_classes, global_pool)
        self.head.to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem, stages and the widening final conv: (B, 2·C_last, H/32, W/32) for four stages."""
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (all, the last ``indices``, or those listed) and, unless
        ``intermediates_only``, the final features. ``norm`` is accepted for API parity: FastViT
        has no norm after its stages."""
        if output_fmt != "NCHW":
            raise ValueError(f"FastViT features are NCHW, got output_fmt={output_fmt!r}")
        take, last = feature_take_indices(self.num_stages, indices)
        stages = self.stages[: last + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == self.num_stages:
            x = self.final_conv(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted index (and the final conv and head)."""
        take, last = feature_take_indices(self.num_stages, indices)
        if prune_norm or prune_head or last < self.num_stages - 1:
            self.final_conv = nn.Identity()
            self.num_features = self.head.in_features = self.feature_info[last]["num_chs"]
            self.reset_classifier(0, "")
        self.stages = self.stages[: last + 1]
        self.num_stages = len(self.stages)
        return take


class FeatureInfo:
    """Channels, reductions and module names of the feature maps a features_only model returns."""

    def __init__(self, entries: list[dict], out_indices: Sequence[int]):
        self.info = [{"index": position, **entry} for position, entry in enumerate(entries)]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        """The same maps, another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        """The entries of the selected maps (or of ``idx``), whole or only their ``keys``."""
        def entry(i: int) -> dict:
            return self.info[i] if keys is None else {key: self.info[i][key] for key in keys}

        if isinstance(idx, int):
            return entry(idx)
        return [entry(i) for i in (self.out_indices if idx is None else idx)]

    def __getitem__(self, item: int) -> dict:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.get_dicts()})"


class FastVitFeatures(nn.Module):
    """``features_only=True``: the stem and the stages up to the last requested one, returning
    the raw stage outputs. Modules are named ``stem_0 … stages_N`` as in timm's FeatureListNet,
    so state dicts match timm's."""

    __jit_unused_properties__ = ["default_cfg"]

    def __init__(self, model: FastVit, out_indices: Sequence[int] = (0, 1, 2, 3)):
        super().__init__()
        take, last = feature_take_indices(model.num_stages, out_indices)
        self.out_indices = tuple(sorted(set(take)))  # the stages returned, in the order they come out
        # feature_info keeps the indices as given (an int n as -n..-1), as timm's does
        given = tuple(range(-out_indices, 0)) if isinstance(out_indices, int) else tuple(out_indices)
        self.feature_info = FeatureInfo(model.feature_info, given)
        self.pretrained_cfg = model.pretrained_cfg
        self.in_chans = model.in_chans
        for i, block in enumerate(model.stem):
            self.add_module(f"stem_{i}", block)
        for i in range(last + 1):
            self.add_module(f"stages_{i}", model.stages[i])

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for name, module in self.named_children():
            if name.startswith("stages_"):
                module.grad_checkpointing = enable

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for name, module in self.named_children():
            x = module(x)
            if name.startswith("stages_") and int(name[len("stages_"):]) in self.out_indices:
                features.append(x)
        return features
