"""Training-time behaviour of every variant, and tracing/exporting the fused model."""

from __future__ import annotations

import pytest
import torch

import fastvit
from conftest import synthetic_model


@pytest.mark.parametrize("name", fastvit.list_models())
def test_forward_backward_every_variant(name):
    model = synthetic_model(name).train()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    assert x.grad.abs().sum() > 0


def test_train_eval_switching_updates_and_uses_running_stats():
    model = synthetic_model("fastvit_t8")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        eval_before = model(x)
        bn = model.stem[0].conv_kxk[0].bn
        running_mean = bn.running_mean.clone()
        model.train()
        train_out = model(x)
        assert not torch.equal(bn.running_mean, running_mean)
        assert not torch.allclose(train_out, eval_before)
        model.eval()
        eval_after = model(x)
    assert not torch.equal(eval_after, eval_before)  # the running statistics moved
    with torch.no_grad():
        torch.testing.assert_close(model(x), eval_after)


def test_grad_checkpointing_matches_plain_backward():
    def gradients(checkpointing: bool) -> list[torch.Tensor]:
        model = synthetic_model("fastvit_sa12")
        model.set_grad_checkpointing(checkpointing)
        model(torch.ones(1, 3, 64, 64)).sum().backward()
        return [p.grad for p in model.parameters()]

    for with_ckpt, without in zip(gradients(True), gradients(False)):
        torch.testing.assert_close(with_ckpt, without)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # deprecated in torch 2.13, still what many deploy with
@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_fused_model_traces_and_exports(name):
    fused = fastvit.reparameterize(synthetic_model(name))
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = fused(x)
        traced = torch.jit.trace(fused, x)
        torch.testing.assert_close(traced(x), expected)
        exported = torch.export.export(fused, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
