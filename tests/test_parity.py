"""Every variant, in both forms, against timm's outputs on the same weights (tests/golden).

The golden files come from scripts/make_golden.py run in the timm reference environment. The
tolerance is 1e-4 of the reference tensor's largest magnitude, in fp32.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import fastvit
from conftest import synthetic_model
from fastvit.models.network import FastVitFeatures
from synthetic_weights import synthetic_input

GOLDEN = Path(__file__).parent / "golden"
INPUTS = {"256": ((1, 3, 256, 256), 0), "200x232": ((2, 3, 200, 232), 1)}
RTOL = 1e-4
KEYS = json.loads(gzip.decompress((GOLDEN / "keys.json.gz").read_bytes()))


def relative_error(golden: dict, name: str, actual: torch.Tensor) -> float:
    """Largest deviation from the reference, relative to the reference's largest magnitude."""
    actual = actual.detach().float().numpy()
    scale = float(golden[f"{name}.absmax"])
    if f"{name}.full" in golden:
        reference = golden[f"{name}.full"]
        assert actual.shape == reference.shape, name
        return float(np.abs(actual - reference).max()) / scale
    sample = actual.reshape(-1)[golden[f"{name}.sample_index"]]
    channel_mean = actual.mean(axis=(2, 3)) if actual.ndim == 4 else actual
    assert channel_mean.shape == golden[f"{name}.channel_mean"].shape, name
    return max(
        float(np.abs(sample - golden[f"{name}.sample"]).max()),
        float(np.abs(channel_mean - golden[f"{name}.channel_mean"]).max()),
        abs(float(np.abs(actual).max()) - scale),
    ) / scale


def load_golden(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(GOLDEN / f"{name}.npz"))


def parity_errors(name: str, golden: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative error of every golden output of ``name`` (both forms, both inputs, every stage)."""
    model = synthetic_model(name)
    forms = {"unfused": model, "fused": fastvit.reparameterize(model)}
    features = FastVitFeatures(forms["fused"], out_indices=range(model.num_stages))
    errors = {}
    with torch.no_grad():
        for label, (shape, seed) in INPUTS.items():
            x = synthetic_input(shape, seed)
            for form, net in forms.items():
                feats = net.forward_features(x)
                outputs = {
                    "logits": net(x),
                    "pre_logits": net.forward_head(feats, pre_logits=True),
                    "forward_features": feats,
                }
                for output, value in outputs.items():
                    errors[f"{label}.{form}.{output}"] = relative_error(golden, f"{label}.{form}.{output}", value)
            for index, feature_map in enumerate(features(x)):
                errors[f"{label}.features.{index}"] = relative_error(golden, f"{label}.features.{index}", feature_map)
    return errors


@pytest.mark.parametrize("name", fastvit.list_models())
def test_outputs_match_timm(name):
    golden = load_golden(name)
    errors = parity_errors(name, golden)
    assert set(errors) == {key.removesuffix(".absmax") for key in golden if key.endswith(".absmax")}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= RTOL, f"{name} {worst}: relative error {errors[worst]:.2e}"


def key_table(model: torch.nn.Module) -> list[list]:
    return [[key, list(value.shape)] for key, value in model.state_dict().items()]


@pytest.mark.parametrize("name", fastvit.list_models())
def test_state_dict_keys_match_timm(name):
    reference = KEYS[name]
    with torch.device("meta"):
        assert key_table(fastvit.create_model(name)) == reference["unfused"]
        assert key_table(fastvit.create_model(name, inference_mode=True)) == reference["fused"]
        assert sorted(key_table(fastvit.reparameterize(fastvit.create_model(name)))) == sorted(reference["fused"])
        features = fastvit.create_model(name, features_only=True)
        assert key_table(features) == reference["features_only"]
        assert features.feature_info.get_dicts() == reference["feature_info"]
        assert fastvit.create_model(name).num_features == reference["num_features"]
