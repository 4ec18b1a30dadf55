"""Folders of real photos and bad files, checkpoints and reference calls for the batch and CLI tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastvit.data import create_transform, load_image, resolve_data_config

SOURCES = sorted((Path(__file__).parent / "images").iterdir())
PIXEL_LIMIT = 100_000
"""The decompression-bomb limit the tests set: the photos stay under it, bomb.png (400 x 400) does not."""
BAD_FILES = {
    "empty.jpg": "the file is empty",
    "notes.jpg": "not an image format Pillow can read",
    "sub/truncated.jpg": "image file is truncated",
    "bomb.png": "decompression bomb",
}
"""The bad files of a photo folder: name -> part of the reason they are listed with."""


def make_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` small JPEGs (random crops of the test photos, 64..200 px a side), every third one
    in a subfolder; returns their paths in the order a folder walk yields them."""
    rng = random.Random(seed)
    sources = [Image.open(path).convert("RGB") for path in SOURCES]
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = sources[index % len(sources)]
        width, height = rng.randint(96, image.width), rng.randint(96, image.height)
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
        photo = image.crop((left, top, left + width, top + height)).resize((rng.randint(64, 200), rng.randint(64, 200)))
        path = folder / ("sub" if index % 3 == 0 else "") / f"photo{index:03d}.jpg"
        photo.save(path, quality=90)
        paths.append(str(path))
    return sorted(paths)


def add_bad_files(folder: Path) -> list[str]:
    """The files of :data:`BAD_FILES` in ``folder``; returns their paths in folder-walk order."""
    jpeg = next(folder.glob("*.jpg")).read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / "sub" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.new("RGB", (400, 400), "red").save(folder / "bomb.png")
    return sorted(str(folder / name) for name in BAD_FILES)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def direct_call(model: torch.nn.Module, paths: list[str], pre_logits: bool = False) -> np.ndarray:
    """The unfused model on ``paths``, one batch, no batch machinery."""
    transform = create_transform(**resolve_data_config(model=model))
    with torch.inference_mode():
        features = model.forward_features(torch.stack([transform(load_image(path)) for path in paths]))
        return model.forward_head(features, pre_logits=pre_logits).numpy()
