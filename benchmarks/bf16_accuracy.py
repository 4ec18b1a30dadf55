"""How far bf16 moves a model's outputs from fp32: top-1 agreement and the largest logit change over a
set of real images, and the accuracy of both where the images are in class folders.

    python benchmarks/bf16_accuracy.py                                   # tests/images, synthetic weights
    python benchmarks/bf16_accuracy.py --checkpoint runs/digits/fused.safetensors --images digits/

``--images`` is a folder of images; when its subfolders are named as the checkpoint's classes
(the layout ``fastvit train`` reads), each image's label is its subfolder and both accuracies are
printed. Where the CPU has no native bf16, the bf16 numerics are emulated (every op's result
rounded to bf16, the Predictor's ``allow_emulated_bf16``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import fastvit  # noqa: E402
from fastvit.jobs.inputs import collect_inputs  # noqa: E402
from fastvit.runtime.precision import bf16_is_native  # noqa: E402
from fastvit.runtime.predictor import Predictor  # noqa: E402


def logits_of(predictor: Predictor, images: list[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    return torch.cat([predictor(torch.stack(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fastvit_t8")
    parser.add_argument("--checkpoint", help="trained weights (default: the test suite's synthetic weights)")
    parser.add_argument("--images", default=str(ROOT / "tests" / "images"))
    args = parser.parse_args(argv)

    if args.checkpoint:
        model = fastvit.create_model(args.model, checkpoint_path=args.checkpoint).eval()
    else:
        from conftest import synthetic_model

        model = synthetic_model(args.model)
    fp32 = Predictor(model)
    bf16 = Predictor(model, precision="bf16", allow_emulated_bf16=True)
    transform = fp32.transform()
    paths = collect_inputs([args.images])
    images = [transform(fastvit.load_image(path)) for path in paths]
    reference, result = logits_of(fp32, images), logits_of(bf16, images)

    agree = (reference.argmax(-1) == result.argmax(-1)).float()
    change = (result - reference).abs()
    print(f"{args.model} ({args.checkpoint or 'synthetic weights'}), {len(paths)} images from {args.images}, "
          f"bf16 {'native' if bf16_is_native() else 'emulated (no native bf16 on this CPU)'}:")
    print(f"  top-1 agreement with fp32: {agree.mean():.2%} ({int(agree.sum())}/{len(paths)})")
    print(f"  largest logit change: {change.max():.4f} (largest |logit| {reference.abs().max():.2f}; "
          f"mean change {change.mean():.5f})")
    names = list(model.pretrained_cfg.get("label_names") or [])
    labels = [Path(path).parent.name for path in paths]
    if names and all(label in names for label in labels):
        truth = torch.tensor([names.index(label) for label in labels])
        for name, logits in (("fp32", reference), ("bf16", result)):
            print(f"  {name} accuracy: {(logits.argmax(-1) == truth).float().mean():.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
