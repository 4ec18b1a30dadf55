"""Compare fastvit with Apple's own code on every Apple model, through Apple's checkpoint layouts.

For each ml-fastvit variant: Apple's model filled with synthetic weights seeded by Apple's key
names, saved as Apple saves them (an unfused ``.pth.tar`` and, after Apple's
``reparameterize_model``, a fused ``*_reparam.pth.tar``), loaded by fastvit from those files and
run on the same input; for each MobileCLIP v1 tower (ml-mobileclip's ``MCi``), the same through a
MobileCLIP ``.pt`` layout. Prints the largest relative errors as a markdown table. Runs in the
reference environment (Apple's code imports timm), with checkouts of both repositories:

    /tmp/ref/bin/python scripts/apple_parity_report.py /tmp/ml-fastvit /tmp/ml-mobileclip

tests/test_weights.py checks T8, SA12 and MCi0 in CI from golden outputs (make_golden_apple.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
import fastvit  # noqa: E402
from apple_layout import synthetic_apple_state_dict  # noqa: E402
from synthetic_weights import synthetic_input  # noqa: E402

FASTVIT_VARIANTS = ("t8", "t12", "s12", "sa12", "sa24", "sa36", "ma36")
MOBILECLIP_TOWERS = ("mci0", "mci1", "mci2")
INPUT = ((2, 3, 160, 192), 3)
"""Not square and not 256, to catch any baked-in size."""


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def seeded(apple_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    weights = synthetic_apple_state_dict([(key, tuple(value.shape)) for key, value in apple_model.state_dict().items()])
    apple_model.load_state_dict(weights, strict=True)
    return weights


@torch.no_grad()
def fastvit_row(apple_models, reparameterize_model, variant: str, folder: Path, x: torch.Tensor) -> str:
    name = f"fastvit_{variant}"
    apple = getattr(apple_models, name)().eval()
    weights = seeded(apple)
    apple_fused = reparameterize_model(apple).eval()
    torch.save({"state_dict": weights}, folder / f"{name}.pth.tar")
    torch.save({"state_dict": apple_fused.state_dict()}, folder / f"{name}_reparam.pth.tar")
    ours = fastvit.create_model(name, checkpoint_path=folder / f"{name}.pth.tar").eval()
    ours_from_fused_file = fastvit.create_model(name, checkpoint_path=folder / f"{name}_reparam.pth.tar").eval()
    reference, fused_reference = apple(x), apple_fused(x)
    return (
        f"| {name} | {relative_error(ours(x), reference):.1e} | {relative_error(ours_from_fused_file(x), fused_reference):.1e} "
        f"| {relative_error(fastvit.reparameterize(ours)(x), fused_reference):.1e} |"
    )


@torch.no_grad()
def mobileclip_row(mci_class, reparameterize_model, tower_name: str, folder: Path, x: torch.Tensor) -> str:
    tower = mci_class(tower_name, projection_dim=512).eval()
    weights = seeded(tower)
    path = folder / f"{tower_name}.pt"
    torch.save({f"image_encoder.{key}": value for key, value in weights.items()}, path)
    ours = fastvit.create_model(f"fastvit_{tower_name}", checkpoint_path=path).eval()
    reference, fused_reference = tower(x), reparameterize_model(tower).eval()(x)
    return (
        f"| fastvit_{tower_name} (MobileCLIP .pt) | {relative_error(ours(x), reference):.1e} | – "
        f"| {relative_error(fastvit.reparameterize(ours)(x), fused_reference):.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ml_fastvit", type=Path, help="a checkout of github.com/apple/ml-fastvit")
    parser.add_argument("ml_mobileclip", type=Path, nargs="?", help="a checkout of github.com/apple/ml-mobileclip")
    args = parser.parse_args()
    x = synthetic_input(*INPUT)
    print("| model | unfused file | Apple-fused file | our fold vs Apple's fold |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, str(args.ml_fastvit.resolve()))
        import models as apple_models  # Apple's ml-fastvit package
        from models.modules.mobileone import reparameterize_model

        for variant in FASTVIT_VARIANTS:
            print(fastvit_row(apple_models, reparameterize_model, variant, Path(folder), x), flush=True)
        if args.ml_mobileclip:
            sys.path.insert(0, str(args.ml_mobileclip.resolve()))
            sys.modules.setdefault("open_clip", types.ModuleType("open_clip"))  # only its text tokenizer needs it
            from mobileclip.image_encoder import MCi
            from mobileclip.modules.common.mobileone import reparameterize_model as reparameterize_mobileclip

            for tower_name in MOBILECLIP_TOWERS:
                print(mobileclip_row(MCi, reparameterize_mobileclip, tower_name, Path(folder), x), flush=True)


if __name__ == "__main__":
    main()
