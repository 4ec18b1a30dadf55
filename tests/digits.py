"""scikit-learn's handwritten digits (1,797 scans of 8 x 8 pixels, 10 classes) as a folder of PNGs,
one class folder per digit: real labelled images for the training tests and the accuracy run.

    python tests/digits.py DIGITS/ [--size 64] [--per-class N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: Path, size: int = 64, per_class: int | None = None, classes: int = 10) -> list[Path]:
    """Write ``folder/<digit>/<index>.png`` (dark ink on white, enlarged to ``size`` pixels) for the
    first ``per_class`` images of each of the first ``classes`` digits (all of them by default);
    return the paths in dataset order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    written, counts = [], dict.fromkeys(range(classes), 0)
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        label = int(label)
        if label not in counts or (per_class is not None and counts[label] >= per_class):
            continue
        counts[label] += 1
        ink = np.clip(pixels * (255 / 16), 0, 255).astype(np.uint8)  # values are 0..16 levels of ink
        image = Image.fromarray(255 - ink).resize((size, size), Image.Resampling.BILINEAR)
        path = folder / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--per-class", type=int, help="images per digit (default: all, 1,797 in total)")
    args = parser.parse_args()
    print(f"wrote {len(write_digits(args.folder, args.size, args.per_class))} images to {args.folder}")
