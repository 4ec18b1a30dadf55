"""Golden outputs of Apple's own FastViT code, for the Apple-checkpoint tests in tests/test_weights.py.

Apple's code is never part of this repository: check it out elsewhere and pass its path. Run in
the reference environment (Apple's models import timm):

    git clone https://github.com/apple/ml-fastvit /tmp/ml-fastvit
    git clone https://github.com/apple/ml-mobileclip /tmp/ml-mobileclip
    /tmp/ref/bin/python scripts/make_golden_apple.py /tmp/ml-fastvit --mobileclip /tmp/ml-mobileclip

For fastvit_t8 and fastvit_sa12, Apple's model is filled with synthetic weights seeded by
Apple's own key names (tests/apple_layout.synthetic_apple_state_dict, which involves no key
conversion), run on a fixed 128×128 input (INPUT), then folded with Apple's
``reparameterize_model`` and run again. Written to tests/golden/:

- ``apple_fastvit_<v>_{unfused,fused}.txt``: Apple's state-dict keys and shapes, one ``key (shape)`` a line;
- ``apple_fastvit_<v>.npz``: ``<form>.logits`` of both forms on ``synthetic_input(input_shape,
  input_seed)``, and ``fused.sum`` / ``fused.abs_sum``: the sum and absolute sum of every fused
  tensor, in key-list order.

With ``--mobileclip``, the same for the image tower of Apple's MobileCLIP code (``MCi("mci0",
projection_dim=512)``, whose state dict sits under ``image_encoder.`` in MobileCLIP ``.pt`` files):
``apple_mobileclip_mci0.txt`` (its keys and shapes) and ``apple_mobileclip_mci0.npz``
(``<form>.embedding`` of both forms on the same kind of input).

No weights are saved.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT / "tests"))
from apple_layout import synthetic_apple_state_dict  # noqa: E402
from synthetic_weights import synthetic_input  # noqa: E402

VARIANTS = ("fastvit_t8", "fastvit_sa12")
MOBILECLIP_TOWERS = {"mci0": 512}
"""Apple's MCi name -> CLIP embedding size; mci1 and mci2 differ from mci0 in depth and width only."""
INPUT = ((1, 3, 128, 128), 0)
"""Small, to keep the tests fast; any size runs through FastViT."""


def write_key_list(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path.write_text("".join(f"{key} {tuple(value.shape)}\n" for key, value in state_dict.items()), encoding="utf-8")


@torch.no_grad()
def golden_for(apple_models, reparameterize_model, name: str) -> dict[str, np.ndarray]:
    model = getattr(apple_models, name)().eval()
    key_shapes = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    model.load_state_dict(synthetic_apple_state_dict(key_shapes), strict=True)
    fused = reparameterize_model(model).eval()
    write_key_list(GOLDEN / f"apple_{name}_unfused.txt", model.state_dict())
    write_key_list(GOLDEN / f"apple_{name}_fused.txt", fused.state_dict())

    shape, seed = INPUT
    x = synthetic_input(shape, seed)
    golden = {f"{form}.logits": net(x).numpy() for form, net in (("unfused", model), ("fused", fused))}
    golden.update(input_shape=np.array(shape), input_seed=np.array(seed))
    tensors = [value.double() for value in fused.state_dict().values()]
    golden["fused.sum"] = np.array([float(t.sum()) for t in tensors])
    golden["fused.abs_sum"] = np.array([float(t.abs().sum()) for t in tensors])
    return golden


@torch.no_grad()
def mobileclip_golden_for(mci_class, reparameterize_model, name: str, embed_dim: int) -> dict[str, np.ndarray]:
    tower = mci_class(name, projection_dim=embed_dim).eval()
    key_shapes = [(key, tuple(value.shape)) for key, value in tower.state_dict().items()]
    tower.load_state_dict(synthetic_apple_state_dict(key_shapes), strict=True)
    write_key_list(GOLDEN / f"apple_mobileclip_{name}.txt", tower.state_dict())
    fused = reparameterize_model(tower).eval()

    shape, seed = INPUT
    x = synthetic_input(shape, seed)
    golden = {f"{form}.embedding": net(x).numpy() for form, net in (("unfused", tower), ("fused", fused))}
    golden.update(input_shape=np.array(shape), input_seed=np.array(seed))
    return golden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("apple_checkout", type=Path, help="a checkout of github.com/apple/ml-fastvit")
    parser.add_argument("--mobileclip", type=Path, metavar="CHECKOUT", help="a checkout of github.com/apple/ml-mobileclip")
    args = parser.parse_args()
    sys.path.insert(0, str(args.apple_checkout.resolve()))
    import models as apple_models  # Apple's ml-fastvit package
    from models.modules.mobileone import reparameterize_model

    for name in VARIANTS:
        np.savez_compressed(GOLDEN / f"apple_{name}.npz", **golden_for(apple_models, reparameterize_model, name))
        print(f"wrote tests/golden/apple_{name}.npz and its key lists")
    if args.mobileclip:
        sys.path.insert(0, str(args.mobileclip.resolve()))
        sys.modules.setdefault("open_clip", types.ModuleType("open_clip"))  # only its text tokenizer needs it
        from mobileclip.image_encoder import MCi
        from mobileclip.modules.common.mobileone import reparameterize_model as reparameterize_mobileclip

        for name, embed_dim in MOBILECLIP_TOWERS.items():
            golden = mobileclip_golden_for(MCi, reparameterize_mobileclip, name, embed_dim)
            np.savez_compressed(GOLDEN / f"apple_mobileclip_{name}.npz", **golden)
            print(f"wrote tests/golden/apple_mobileclip_{name}.npz and its key list")


if __name__ == "__main__":
    main()
