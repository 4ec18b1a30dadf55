"""Model statistics computed from the network: they must reproduce the published model cards."""

from __future__ import annotations

import pytest

from fastvit.models.stats import model_info

# Published figures at 256x256. Train-time form: timm's model cards and PyTorch 2.4 benchmark
# CSVs; fused form: timm's reparameterized PyTorch 2.9 benchmark CSV. (M, G, M as printed there.)
PUBLISHED = {
    "fastvit_t8": dict(params=4.03, gmacs=0.70, acts=8.63, fused_params=4.00, fused_gmacs=0.69, fused_acts=6.59),
    "fastvit_sa12": dict(params=11.58, gmacs=1.96, acts=14.03, fused_params=11.55, fused_gmacs=1.94, fused_acts=11.24),
    "fastvit_ma36": dict(params=44.07, gmacs=7.88, acts=41.09, fused_params=43.98, fused_gmacs=7.82, fused_acts=34.98),
    "fastvit_mci0": dict(params=11.41, gmacs=2.42, acts=18.29, fused_params=11.36, fused_gmacs=2.39, fused_acts=14.72),
    "fastvit_mci4": dict(fused_params=321.57, fused_gmacs=27.78, fused_acts=60.59),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_stats_reproduce_published_figures(name):
    stats = model_info(name)
    assert stats.input_size == (3, 256, 256)
    computed = {
        "params": stats.params / 1e6, "gmacs": stats.macs / 1e9, "acts": stats.activations / 1e6,
        "fused_params": stats.fused_params / 1e6, "fused_gmacs": stats.fused_macs / 1e9,
        "fused_acts": stats.fused_activations / 1e6,
    }
    for key, published in PUBLISHED[name].items():
        assert computed[key] == pytest.approx(published, abs=0.005), key


def test_t8_card_rounding():
    row = model_info("fastvit_t8").as_row()
    assert (round(row["params (M)"], 1), round(row["GMACs"], 1), round(row["activations (M)"], 1)) == (4.0, 0.7, 8.6)


def test_stats_scale_with_input_size():
    small, large = model_info("fastvit_t8", (3, 128, 128)), model_info("fastvit_t8", (3, 256, 256))
    assert small.params == large.params
    assert large.macs == pytest.approx(4 * small.macs, rel=0.01)
