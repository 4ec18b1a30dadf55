"""Golden outputs of timm's FastViT models, for the parity tests in tests/test_parity.py.

Run in the reference environment (timm 1.0.x on the full torch build; never a dependency of
fastvit or of CI):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install --isolated torch==2.13.0 torchvision==0.28.0 timm
    /tmp/ref/bin/python scripts/make_golden.py

Every timm model is filled with the deterministic weights of tests/synthetic_weights.py and run
on fixed inputs; only outputs are saved (tests/golden/<variant>.npz), never weights. Large
tensors are stored as a summary: the per-channel means, a fixed sample of elements and the
maximum magnitude. tests/golden/keys.json.gz records timm's state-dict keys and shapes of every
variant in its train-time, fused and features_only forms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from timm.utils.model import reparameterize_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from synthetic_weights import synthetic_input, synthetic_state_dict  # noqa: E402

INPUTS = {"256": ((1, 3, 256, 256), 0), "200x232": ((2, 3, 200, 232), 1)}
FULL_LIMIT = 8192
SAMPLE = 1024


def summarise(name: str, tensor: torch.Tensor) -> dict[str, np.ndarray]:
    array = tensor.detach().float().numpy()
    out = {f"{name}.absmax": np.float32(np.abs(array).max())}
    if array.size <= FULL_LIMIT:
        out[f"{name}.full"] = array
        return out
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    index = np.sort(rng.choice(array.size, SAMPLE, replace=False)).astype(np.int32)
    out[f"{name}.sample_index"] = index
    out[f"{name}.sample"] = array.reshape(-1)[index]
    out[f"{name}.channel_mean"] = array.mean(axis=(2, 3)) if array.ndim == 4 else array
    return out


def key_table(state_dict: dict) -> list[list]:
    return [[key, list(value.shape)] for key, value in state_dict.items()]


@torch.no_grad()
def golden_for(name: str) -> tuple[dict, dict]:
    model = timm.create_model(name).eval()
    model.load_state_dict(synthetic_state_dict(model.state_dict()), strict=True)
    fused = reparameterize_model(model)
    inference_keys = timm.create_model(name, inference_mode=True).state_dict()
    assert set(fused.state_dict()) == set(inference_keys), name

    num_stages = len(model.stages)
    features = timm.create_model(name, features_only=True, out_indices=tuple(range(num_stages))).eval()
    features.load_state_dict(synthetic_state_dict(features.state_dict()), strict=True)
    default_features = timm.create_model(name, features_only=True)

    golden = {}
    for label, (shape, seed) in INPUTS.items():
        x = synthetic_input(shape, seed)
        for form, net in (("unfused", model), ("fused", fused)):
            feats = net.forward_features(x)
            golden.update(summarise(f"{label}.{form}.logits", net(x)))
            golden.update(summarise(f"{label}.{form}.pre_logits", net.forward_head(feats, pre_logits=True)))
            golden.update(summarise(f"{label}.{form}.forward_features", feats))
        for index, feature_map in enumerate(features(x)):
            golden.update(summarise(f"{label}.features.{index}", feature_map))

    keys = {
        "unfused": key_table(model.state_dict()),
        "fused": key_table(inference_keys),
        "features_only": key_table(default_features.state_dict()),
        "feature_info": [dict(d) for d in default_features.feature_info.get_dicts()],
        "num_features": model.num_features,
    }
    return golden, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=timm.list_models("fastvit_*"))
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    keys_path = args.out / "keys.json.gz"
    all_keys = json.loads(gzip.decompress(keys_path.read_bytes())) if keys_path.exists() else {}
    for name in args.models:
        golden, keys = golden_for(name)
        np.savez_compressed(args.out / f"{name}.npz", **golden, timm_version=np.array(timm.__version__))
        all_keys[name] = keys
        print(f"{name}: {len(golden)} arrays")
    all_keys = dict(sorted(all_keys.items()))
    keys_path.write_bytes(gzip.compress(json.dumps(all_keys, separators=(",", ":")).encode(), mtime=0))


if __name__ == "__main__":
    main()
