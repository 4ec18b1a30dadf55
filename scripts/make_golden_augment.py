"""Write tests/golden/augment.npz: timm's RandAugment ops and config strings.

Run it in the reference environment (timm), never in fastvit's own::

    /tmp/ref/bin/python scripts/make_golden_augment.py

Every op of timm's two RandAugment sets (``rand-...`` and ``rand-...-inc1``) is applied by timm's
``AugmentOp`` (probability 1, no magnitude noise, bicubic, the ImageNet mean as fill) at a few
magnitudes, with the random sign of the signed ops forced each way, to a 32x24 patch of
tests/images/chelsea.png; the outputs are stored as uint8 HWC arrays under ``op/<name>/<magnitude>/<sign>`` (sign 1, the
flipped one, only where it changes the output).
(Pillow 11 refuses what ``Posterize`` asks below magnitude 2.5, to keep 0 bits: those are left
out.) For a few config strings the parsed RandAugment (op names, layers, probability, magnitude, its
noise and limit) is stored as JSON under ``configs``. Random draws are not compared: they come from
different generators.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm.data.auto_augment as auto_augment
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden" / "augment.npz"
FILL = (124, 116, 104)  # round(255 * ImageNet mean), as timm's transform factory computes it
MAGNITUDES = (0.0, 2.6, 9.0, 10.0)
CONFIGS = ("rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.7", "rand-m10-mstd101-mmax12", "rand-n1-m3")


def main() -> None:
    image = Image.open(ROOT / "tests" / "images" / "chelsea.png").convert("RGB").crop((208, 64, 240, 88))
    arrays = {"image": np.asarray(image)}
    names = sorted(set(auto_augment._RAND_TRANSFORMS) | set(auto_augment._RAND_INCREASING_TRANSFORMS))
    hparams = {"img_mean": FILL, "interpolation": Image.Resampling.BICUBIC}
    for name in names:
        for magnitude in MAGNITUDES:
            for negate in (False, True):
                auto_augment.random.random = (lambda: 0.9) if negate else (lambda: 0.1)  # > 0.5 negates
                op = auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
                try:
                    output = np.asarray(op(image.copy()))
                except ValueError:  # Pillow >= 11 refuses to posterize to 0 bits (Posterize below magnitude 2.5)
                    continue
                unsigned = arrays.get(f"op/{name}/{magnitude}/0")
                if not negate or not np.array_equal(output, unsigned):  # the sign flipped only where it matters
                    arrays[f"op/{name}/{magnitude}/{int(negate)}"] = output
    configs = {}
    for config in CONFIGS:
        transform = auto_augment.rand_augment_transform(config, {"img_mean": FILL})
        first = transform.ops[0]
        configs[config] = {
            "ops": [op.name for op in transform.ops], "num_layers": transform.num_layers, "prob": first.prob,
            "magnitude": first.magnitude, "magnitude_std": first.magnitude_std,
            "magnitude_max": first.magnitude_max,
        }
    arrays["configs"] = np.array(json.dumps(configs))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(arrays) - 2} op outputs, {len(configs)} configs")


if __name__ == "__main__":
    main()
