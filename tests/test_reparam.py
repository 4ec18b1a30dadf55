"""Structural reparameterization: every foldable block folds exactly, once, in place of its branches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastvit
from conftest import synthetic_model
from fastvit.models.layers import MobileOneBlock, RepConditionalPosEnc, ReparamLargeKernelConv, RepMixer
from fastvit.models.reparam import ReparamBlock, reparameterize

# (constructor, kwargs, input channels) covering every branch combination the variants use.
BLOCK_CASES = {
    "mobileone_dense_s2": (MobileOneBlock, dict(in_chs=3, out_chs=16, kernel_size=3, stride=2), 3),
    "mobileone_depthwise_s2": (MobileOneBlock, dict(in_chs=16, out_chs=16, kernel_size=3, stride=2, group_size=1), 16),
    "mobileone_1x1_identity": (MobileOneBlock, dict(in_chs=16, out_chs=16, kernel_size=1), 16),
    "mobileone_no_scale": (MobileOneBlock, dict(in_chs=8, out_chs=8, kernel_size=3, use_scale_branch=False), 8),
    "mobileone_se_grouped": (
        MobileOneBlock, dict(in_chs=16, out_chs=32, kernel_size=3, group_size=1, use_se=True), 16,
    ),
    "mobileone_two_branches": (MobileOneBlock, dict(in_chs=8, out_chs=8, kernel_size=3, num_conv_branches=2), 8),
    "mobileone_identity_only": (
        MobileOneBlock,
        dict(in_chs=8, out_chs=8, kernel_size=3, group_size=1, use_act=False, use_scale_branch=False, num_conv_branches=0),
        8,
    ),
    "large_kernel": (ReparamLargeKernelConv, dict(in_chs=8, out_chs=16, kernel_size=7, stride=2, group_size=1, small_kernel=3), 8),
    "large_kernel_se_act": (
        ReparamLargeKernelConv,
        dict(in_chs=16, out_chs=32, kernel_size=7, stride=2, group_size=1, small_kernel=3, use_se=True, act_layer=nn.GELU),
        16,
    ),
    "large_kernel_alone": (ReparamLargeKernelConv, dict(in_chs=8, out_chs=16, kernel_size=7, stride=2, group_size=1), 8),
    "repmixer": (RepMixer, dict(dim=16), 16),
    "repmixer_no_layer_scale": (RepMixer, dict(dim=16, layer_scale_init_value=None), 16),
    "repcpe": (RepConditionalPosEnc, dict(dim=16), 16),
}


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Give every parameter and BN statistic a non-trivial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)


def test_every_foldable_block_is_covered():
    classes = {cls for cls, _, _ in BLOCK_CASES.values()}
    assert classes == set(ReparamBlock.__subclasses__())


@pytest.mark.parametrize("case", BLOCK_CASES)
def test_block_folds_exactly_and_once(case):
    cls, kwargs, channels = BLOCK_CASES[case]
    block = cls(**kwargs)
    randomise(block)
    block.eval()
    x = torch.randn(2, channels, 13, 11)
    with torch.no_grad():
        before = block(x)
        block.reparameterize()
        after = block(x)
        folded_state = {k: v.clone() for k, v in block.state_dict().items()}
        block.reparameterize()
        assert all(torch.equal(folded_state[k], v) for k, v in block.state_dict().items())

    scale = before.abs().max()
    assert scale > 0.1
    assert (after - before).abs().max() <= 1e-5 * scale
    fused_twin = cls(**kwargs, inference_mode=True)
    assert {k: v.shape for k, v in block.state_dict().items()} == {k: v.shape for k, v in fused_twin.state_dict().items()}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())


def flat(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else torch.cat([o.flatten() for o in output])


def logits_close(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = flat(model(x)), flat(folded(x))
    assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12", "fastvit_mci0", "fastvit_mci3"])
def test_model_folds_exactly_and_idempotently(name):
    model = synthetic_model(name)
    x = torch.randn(1, 3, 128, 160)
    folded = reparameterize(model)
    assert any(isinstance(m, ReparamBlock) and not m.is_fused for m in model.modules()), "input left untouched"
    assert all(m.is_fused for m in folded.modules() if isinstance(m, ReparamBlock))
    logits_close(model, folded, x)
    again = reparameterize(folded, inplace=True)
    assert again is folded
    logits_close(model, again, x)


def test_features_only_and_replaced_head_fold():
    features = synthetic_model("fastvit_t8", features_only=True, out_indices=(1, 3))
    logits_close(features, reparameterize(features), torch.randn(1, 3, 96, 96))

    model = synthetic_model("fastvit_t8")
    model.reset_classifier(7)
    nn.init.normal_(model.head.fc.weight)
    logits_close(model, reparameterize(model), torch.randn(2, 3, 64, 64))


def test_fused_model_loads_into_inference_mode_build():
    folded = reparameterize(synthetic_model("fastvit_sa12"))
    built = fastvit.create_model("fastvit_sa12", inference_mode=True).eval()
    built.load_state_dict(folded.state_dict(), strict=True)
    logits_close(folded, built, torch.randn(1, 3, 64, 64))
