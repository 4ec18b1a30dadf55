"""Write tests/golden/transforms.npz: timm's eval transform applied to the test photos.

Run it in the reference environment (timm + torchvision), never in fastvit's own::

    /tmp/ref/bin/python scripts/make_golden_transforms.py

For every config below, timm's ``create_transform(**resolve_data_config({}, pretrained_cfg=cfg))``
is applied to each photo in tests/images, and for the small configs also to a portrait image,
``chelsea_portrait`` (chelsea.png turned by ``Image.Transpose.ROTATE_90``), since the photos are
all landscape or square. The normalised float output is stored compactly: the
normalisation is undone and the result kept as uint8 HWC, after checking that normalising those
bytes again with torchvision reproduces timm's tensor bit for bit. Each config is stored beside
its arrays as JSON (``<config>/cfg``), together with the data config timm resolved from it.

A few torchvision PIL operations used by the training transform are stored too (``ops/*``), each
applied with fixed parameters to a 64x64 patch of chelsea.png, so that fastvit's versions of them can
be checked without sharing a random number generator.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
import torchvision.transforms.functional as TF
import PIL
from PIL import Image
from timm.data import create_transform, resolve_data_config

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
OUT = ROOT / "tests" / "golden" / "transforms.npz"

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CLIP = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}

CONFIGS: dict[str, dict] = {
    # The four configs FastViT's pretrained tags use.
    "t8_in1k": {"input_size": (3, 256, 256), "crop_pct": 0.9, "interpolation": "bicubic", **IMAGENET},
    "mclip": {"input_size": (3, 256, 256), "crop_pct": 0.95, "interpolation": "bicubic",
              "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
    "crop_1": {"input_size": (3, 256, 256), "crop_pct": 1.0, "interpolation": "bicubic", **IMAGENET},
    "clip_224": {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear", **CLIP},
    # Small extra configs covering the other crop modes and resampling filters.
    "squash_lanczos": {"input_size": (3, 64, 64), "crop_pct": 0.9, "crop_mode": "squash",
                       "interpolation": "lanczos", **IMAGENET},
    "squash_hamming_rect": {"input_size": (3, 54, 72), "crop_pct": 0.8, "crop_mode": "squash",
                            "interpolation": "hamming", **IMAGENET},
    "border_bicubic": {"input_size": (3, 64, 64), "crop_pct": 0.95, "crop_mode": "border",
                       "interpolation": "bicubic", **IMAGENET},
    "center_rect": {"input_size": (3, 60, 84), "crop_pct": 0.875, "interpolation": "bicubic", **IMAGENET},
    "center_pad_box": {"input_size": (3, 64, 64), "crop_pct": 1.15, "interpolation": "box", **IMAGENET},
    "center_nearest": {"input_size": (3, 64, 64), "crop_pct": 0.875, "interpolation": "nearest", **IMAGENET},
}
SMALL = 128  # configs up to this size also get the portrait image

# Fixed-parameter torchvision operations on a 64x64 patch of chelsea.png.
OPS_BOX = (200, 100, 264, 164)  # left, top, right, bottom
OPS = {
    "resized_crop_bicubic": lambda im: TF.resized_crop(im, 5, 9, 40, 50, [48, 56],
                                                       TF.InterpolationMode.BICUBIC),
    "resized_crop_bilinear": lambda im: TF.resized_crop(im, 3, 2, 59, 37, [24, 40],
                                                        TF.InterpolationMode.BILINEAR),
    "hflip": TF.hflip,
    "brightness_1.3": lambda im: TF.adjust_brightness(im, 1.3),
    "contrast_0.7": lambda im: TF.adjust_contrast(im, 0.7),
    "saturation_1.4": lambda im: TF.adjust_saturation(im, 1.4),
    "hue_0.12": lambda im: TF.adjust_hue(im, 0.12),
    "hue_-0.3": lambda im: TF.adjust_hue(im, -0.3),
}


def to_uint8_exact(x: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """Undo the normalisation of ``x`` (C,H,W) and check the bytes reproduce it exactly."""
    mean_t = torch.tensor(mean).view(-1, 1, 1)
    std_t = torch.tensor(std).view(-1, 1, 1)
    u8 = ((x * std_t + mean_t) * 255).round().clamp(0, 255).to(torch.uint8)
    again = TF.normalize(u8.float().div(255), mean=list(mean), std=list(std))
    assert torch.equal(again, x), "normalisation is not exactly invertible"
    return u8.permute(1, 2, 0).contiguous().numpy()


def encode(pixels: np.ndarray) -> np.ndarray:
    """Lossless WebP bytes of an RGB uint8 HWC array, as a 1-D uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", lossless=True, quality=100, method=6)
    data = buffer.getvalue()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels)
    return np.frombuffer(data, dtype=np.uint8)


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    photos = {name: Image.open(ROOT / "tests" / "images" / name).convert("RGB") for name in IMAGES}
    portrait = photos["chelsea.png"].transpose(Image.Transpose.ROTATE_90)
    for key, cfg in CONFIGS.items():
        data_cfg = resolve_data_config({}, pretrained_cfg=cfg)
        transform = create_transform(**data_cfg, is_training=False)
        record = {"pretrained_cfg": cfg, "data_config": data_cfg}
        arrays[f"{key}/cfg"] = np.array(json.dumps(record))
        images = dict(photos, chelsea_portrait=portrait) if max(cfg["input_size"]) <= SMALL else photos
        for name, img in images.items():
            arrays[f"{key}/{name}"] = encode(to_uint8_exact(transform(img), data_cfg["mean"], data_cfg["std"]))
        print(f"{key}: {data_cfg}\n  {transform}".replace("\n", "\n  "))

    patch = photos["chelsea.png"].crop(OPS_BOX)
    arrays["ops/input"] = encode(np.asarray(patch))
    for key, op in OPS.items():
        arrays[f"ops/{key}"] = encode(np.asarray(op(patch)))

    arrays["versions"] = np.array(json.dumps({
        "timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__,
        "pillow": PIL.__version__,
    }))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
