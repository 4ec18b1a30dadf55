"""Every FastViT variant and pretrained weight set, as data.

Architectures follow the FastViT paper (Table 2) and the MobileCLIP image towers; pretrained tags
follow timm's names, each with its eval preprocessing, hub address, licence and published
ImageNet-1k accuracy (timm's results at 256 px). Nothing here builds a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZERO_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Architecture:
    """The numbers that define one FastViT network, stage by stage."""

    layers: tuple[int, ...]
    embed_dims: tuple[int, ...]
    mlp_ratio: float
    token_mixers: tuple[str, ...]
    """'repmixer' or 'attention' per stage."""
    pos_embs: tuple[bool, ...]
    """Whether a stage starts with a RepCPE conditional positional encoding."""
    downsamples: tuple[bool, ...] = (False, True, True, True)
    se_downsamples: tuple[bool, ...] = (False, False, False, False)
    lkc_use_act: bool = False
    """Apply GELU after the large-kernel downsampling conv (MCi only; see ReparamLargeKernelConv)."""
    stem_use_scale_branch: bool = True
    attn_norm: str = "batchnorm"
    """Norm of the attention blocks: 'batchnorm', or 'layernorm' (LayerNorm2d, eps 1e-5)."""

    @property
    def num_stages(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class PretrainedCfg:
    """One published weight set: where it lives, how to preprocess for it, what it scores."""

    hf_hub_id: str
    num_classes: int = 1000
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
    license: str = "fastvit-license"
    url: str = ""
    input_size: tuple[int, int, int] = (3, 256, 256)
    pool_size: tuple[int, int] = (8, 8)
    interpolation: str = "bicubic"
    crop_mode: str = "center"
    fixed_input_size: bool = False
    first_conv: str | tuple[str, ...] = ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv")
    classifier: str = "head.fc"
    metrics: dict[str, float] = field(default_factory=dict)
    """Published ImageNet-1k top-1 / top-5 (%) at 256 px, where the weights are a classifier."""

    def to_dict(self, architecture: str, tag: str) -> dict:
        """The cfg as timm's ``model.pretrained_cfg`` dict, plus ``metrics``."""
        return {"architecture": architecture, "tag": tag, "custom_load": False, **asdict(self)}


@dataclass(frozen=True)
class Variant:
    name: str
    arch: Architecture
    tags: dict[str, PretrainedCfg]
    """Pretrained weight sets by tag; the first one is the default."""

    @property
    def default_tag(self) -> str:
        return next(iter(self.tags))


_R4 = ("repmixer",) * 4
_R3A = ("repmixer",) * 3 + ("attention",)
_NO_CPE = (False,) * 4
_CPE_LAST = (False, False, False, True)
_MCI_SE = (False, False, True, True)


def _in1k(name: str, top1: tuple[float, float], top5: tuple[float, float], crop_pct: float = 0.9) -> dict:
    """The two ImageNet-1k weight sets Apple published per variant: plain and distilled."""
    return {
        tag: PretrainedCfg(
            hf_hub_id=f"timm/{name}.{tag}", crop_pct=crop_pct, metrics={"top1": acc1, "top5": acc5}
        )
        for tag, acc1, acc5 in (("apple_in1k", top1[0], top5[0]), ("apple_dist_in1k", top1[1], top5[1]))
    }


def _mclip(hub_id: str, num_classes: int = 512, crop_pct: float = 0.95, url: str = "", five_stage: bool = False):
    """A MobileCLIP image tower: its 'classes' are the CLIP embedding width.

    The five-stage towers (MCi3/MCi4) take OpenAI CLIP normalisation and have no stem scale branch.
    """
    if five_stage:
        extra = dict(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, pool_size=(4, 4), first_conv="stem.0.conv_kxk.0.conv")
    else:
        extra = dict(mean=ZERO_MEAN, std=UNIT_STD)
    return PretrainedCfg(
        hf_hub_id=hub_id, num_classes=num_classes, crop_pct=crop_pct, url=url, license="apple-amlr", **extra
    )


_APPLE_MCLIP_URL = "https://docs-assets.developer.apple.com/ml-research/datasets/mobileclip/mobileclip_{}.pt"
_MCI_LARGE = dict(
    mlp_ratio=4.0,
    token_mixers=("repmixer",) * 3 + ("attention",) * 2,
    pos_embs=(False, False, False, True, True),
    downsamples=(False, True, True, True, True),
    se_downsamples=(False,) * 5,
    lkc_use_act=True,
    stem_use_scale_branch=False,
    attn_norm="layernorm",
)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "fastvit_t8",
            Architecture((2, 2, 4, 2), (48, 96, 192, 384), 3.0, _R4, _NO_CPE),
            _in1k("fastvit_t8", (76.184, 77.170), (93.042, 93.274)),
        ),
        Variant(
            "fastvit_t12",
            Architecture((2, 2, 6, 2), (64, 128, 256, 512), 3.0, _R4, _NO_CPE),
            _in1k("fastvit_t12", (79.276, 80.364), (94.570, 95.040)),
        ),
        Variant(
            "fastvit_s12",
            Architecture((2, 2, 6, 2), (64, 128, 256, 512), 4.0, _R4, _NO_CPE),
            _in1k("fastvit_s12", (79.882, 81.074), (94.798, 95.278)),
        ),
        Variant(
            "fastvit_sa12",
            Architecture((2, 2, 6, 2), (64, 128, 256, 512), 4.0, _R3A, _CPE_LAST),
            _in1k("fastvit_sa12", (80.846, 81.838), (95.346, 95.700)),
        ),
        Variant(
            "fastvit_sa24",
            Architecture((4, 4, 12, 4), (64, 128, 256, 512), 4.0, _R3A, _CPE_LAST),
            _in1k("fastvit_sa24", (82.706, 83.368), (96.278, 96.574)),
        ),
        Variant(
            "fastvit_sa36",
            Architecture((6, 6, 18, 6), (64, 128, 256, 512), 4.0, _R3A, _CPE_LAST),
            _in1k("fastvit_sa36", (83.502, 84.028), (96.632, 96.850)),
        ),
        Variant(
            "fastvit_ma36",
            Architecture((6, 6, 18, 6), (76, 152, 304, 608), 4.0, _R3A, _CPE_LAST),
            _in1k("fastvit_ma36", (83.884, 84.608), (96.756, 96.996), crop_pct=0.95),
        ),
        Variant(
            "fastvit_mci0",
            Architecture((2, 6, 10, 2), (64, 128, 256, 512), 3.0, _R3A, _CPE_LAST, se_downsamples=_MCI_SE, lkc_use_act=True),
            {
                "apple_mclip": _mclip("apple/mobileclip_s0_timm", url=_APPLE_MCLIP_URL.format("s0")),
                "apple_mclip2_dfndr2b": _mclip("timm/fastvit_mci0.apple_mclip2_dfndr2b", crop_pct=1.0),
            },
        ),
        Variant(
            "fastvit_mci1",
            Architecture((4, 12, 20, 4), (64, 128, 256, 512), 3.0, _R3A, _CPE_LAST, se_downsamples=_MCI_SE, lkc_use_act=True),
            {"apple_mclip": _mclip("apple/mobileclip_s1_timm", url=_APPLE_MCLIP_URL.format("s1"))},
        ),
        Variant(
            "fastvit_mci2",
            Architecture((4, 12, 24, 4), (80, 160, 320, 640), 3.0, _R3A, _CPE_LAST, se_downsamples=_MCI_SE, lkc_use_act=True),
            {
                "apple_mclip": _mclip("apple/mobileclip_s2_timm", url=_APPLE_MCLIP_URL.format("s2")),
                "apple_mclip2_dfndr2b": _mclip("timm/fastvit_mci2.apple_mclip2_dfndr2b"),
            },
        ),
        Variant(
            "fastvit_mci3",
            Architecture((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), **_MCI_LARGE),
            {"apple_mclip2_dfndr2b": _mclip("timm/fastvit_mci3.apple_mclip2_dfndr2b", 768, five_stage=True)},
        ),
        Variant(
            "fastvit_mci4",
            Architecture((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), **_MCI_LARGE),
            {"apple_mclip2_dfndr2b": _mclip("timm/fastvit_mci4.apple_mclip2_dfndr2b", 768, five_stage=True)},
        ),
    )
}
