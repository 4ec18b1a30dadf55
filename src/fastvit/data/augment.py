"""Training-only augmentation steps with timm's names and semantics: RandAugment (Cubuk et al., 2019)
on PIL images, as ``create_transform(..., auto_augment="rand-m9-mstd0.5-inc1")`` inserts it, and
random erasing (Zhong et al., 2017) on normalised tensors, as ``re_prob=...`` appends it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageEnhance, ImageOps

from .transforms import RESAMPLING, _randint, _uniform

__all__ = ["ERASE_MODES", "RAND_AUGMENT_OPS", "RandAugment", "RandomErasing", "augment_op"]

ERASE_MODES = ("const", "rand", "pixel")


@dataclass
class RandomErasing:
    """With probability ``p``, erase 1 to ``max_count`` rectangles of a normalised (C, H, W) image.

    Each rectangle covers a fraction of the image drawn uniformly from ``area`` (divided by the
    number of rectangles) with an aspect ratio drawn log-uniformly from ``aspect`` (default
    ``(0.3, 1 / 0.3)``); a draw that does not fit strictly inside the image is retried, 10 times
    at most. ``mode`` fills it with 0 (``'const'``, the dataset mean after normalisation), one
    normal draw per channel (``'rand'``) or per pixel (``'pixel'``). Random draws use ``generator``.
    """

    p: float = 0.5
    mode: str = "const"
    max_count: int = 1
    area: tuple[float, float] = (0.02, 1 / 3)
    aspect: tuple[float, float] = (0.3, 1 / 0.3)
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ERASE_MODES:
            raise ValueError(f"unknown random erasing mode {self.mode!r}; expected one of {', '.join(ERASE_MODES)}")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if _uniform(0.0, 1.0, self.generator) > self.p:
            return image
        image = image.clone()
        channels, height, width = image.shape
        count = _randint(1, self.max_count, self.generator) if self.max_count > 1 else 1
        log_aspect = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(count):
            for _attempt in range(10):
                target = _uniform(*self.area, self.generator) * height * width / count
                aspect = math.exp(_uniform(*log_aspect, self.generator))
                box_h, box_w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
                if box_w < width and box_h < height:
                    top, left = _randint(0, height - box_h, self.generator), _randint(0, width - box_w, self.generator)
                    image[:, top : top + box_h, left : left + box_w] = self._fill((channels, box_h, box_w), image.dtype)
                    break
        return image

    def _fill(self, shape: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.randn(shape, dtype=dtype, generator=self.generator)
        if self.mode == "rand":
            return torch.randn((shape[0], 1, 1), dtype=dtype, generator=self.generator)
        return torch.zeros((shape[0], 1, 1), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# RandAugment
# ----------------------------------------------------------------------------------------------

LEVELS = 10.0
"""Magnitudes run from 0 to this; an op's strength is its magnitude over it."""
RAND_AUGMENT_OPS = {
    False: ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"),
    True: ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
           "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
           "TranslateXRel", "TranslateYRel"),
}
"""timm's two RandAugment op sets: the original ops, and ``inc1``'s, whose strength grows with
the magnitude for every op (posterize keeps fewer bits, solarize a lower threshold, enhancements
move further from 1 either way)."""

_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
              "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
_SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
           *(f"{name}Increasing" for name in _ENHANCERS)}
"""Ops whose argument takes a random sign."""


def _affine(img: Image.Image, matrix: tuple[float, ...], fill: tuple[int, ...], resample: str) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=RESAMPLING[resample], fillcolor=fill)


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    table = [min(255, value + add) if value < threshold else value for value in range(256)]
    return img.point(table * len(img.getbands()))


def augment_op(name: str, img: Image.Image, magnitude: float, negate: bool = False,
               fill: tuple[int, int, int] = (128, 128, 128), resample: str = "bicubic") -> Image.Image:
    """Apply RandAugment op ``name`` at ``magnitude`` (0 to 10) to an RGB image, with the argument's
    sign flipped for the signed ops when ``negate``; geometric ops fill uncovered pixels with
    ``fill`` and resample with ``resample``. The magnitude maps to the op's argument as in timm."""
    strength = magnitude / LEVELS
    sign = -1.0 if negate and name in _SIGNED else 1.0
    base = name.removesuffix("Increasing")
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return img.rotate(sign * strength * 30.0, resample=RESAMPLING[resample], fillcolor=fill)
    if base == "Posterize":
        bits = int(strength * 4)
        bits = 4 - bits if name != base else bits
        if bits >= 8:  # magnitudes above 20 (--aa ...-mmax): all bits kept, as timm does
            return img
        if bits <= 0:  # none kept (below magnitude 2.5, or above 12.5 increasing): black, as in timm with Pillow < 11
            return Image.new(img.mode, img.size)
        return ImageOps.posterize(img, bits)
    if base == "Solarize":
        threshold = min(256, int(strength * 256))
        return ImageOps.solarize(img, 256 - threshold if name != base else threshold)
    if name == "SolarizeAdd":
        return _solarize_add(img, min(128, int(strength * 110)))
    if base in _ENHANCERS:
        factor = max(0.1, 1.0 + sign * strength * 0.9) if name != base else strength * 1.8 + 0.1
        return _ENHANCERS[base](img).enhance(factor)
    if name in ("ShearX", "ShearY"):
        shear = sign * strength * 0.3
        return _affine(img, (1, shear, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, shear, 1, 0), fill, resample)
    if name in ("TranslateXRel", "TranslateYRel"):
        shift = sign * strength * 0.45
        matrix = (1, 0, shift * img.width, 0, 1, 0) if name == "TranslateXRel" else (1, 0, 0, 0, 1, shift * img.height)
        return _affine(img, matrix, fill, resample)
    raise ValueError(f"unknown RandAugment op {name!r}")


@dataclass
class RandAugment:
    """timm's RandAugment: ``num_layers`` ops drawn uniformly (with replacement) from ``ops``, each
    applied with probability ``prob`` at ``magnitude`` (0 to 10), blurred by a normal draw of
    ``magnitude_std`` (``inf``: uniform in 0..magnitude) and clipped to 0..``magnitude_max``; signed
    ops flip their sign half the time. ``interpolation`` None picks bilinear or bicubic per op.
    Random draws use ``generator``. :meth:`from_config` reads timm's config strings."""

    ops: tuple[str, ...] = RAND_AUGMENT_OPS[False]
    num_layers: int = 2
    magnitude: float = 10.0
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = LEVELS
    fill: tuple[int, int, int] = (128, 128, 128)
    interpolation: str | None = None
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: str, **kwargs) -> RandAugment:
        """``'rand'`` followed by dash-separated ``m<magnitude>``, ``n<layers>``, ``p<probability>``,
        ``mstd<std>`` (over 100: uniform), ``mmax<limit>``, ``inc<0|1>``: e.g. ``'rand-m9-mstd0.5-inc1'``."""
        sections = config.split("-")
        if sections[0] != "rand":
            raise ValueError(f"unsupported auto_augment {config!r}: fastvit implements RandAugment ('rand-...')")
        values: dict[str, float] = {}
        for section in sections[1:]:
            match = re.fullmatch(r"(m|n|p|mstd|mmax|inc)(\d[\d.]*)", section)
            if match is None:
                raise ValueError(f"unknown RandAugment config section {section!r} in {config!r}")
            values[match[1]] = float(match[2])
        std = values.get("mstd", 0.0)
        return cls(
            ops=RAND_AUGMENT_OPS[bool(values.get("inc", 0))], num_layers=int(values.get("n", 2)),
            magnitude=int(values.get("m", LEVELS)), prob=values.get("p", 0.5),
            magnitude_std=math.inf if std > 100 else std, magnitude_max=int(values.get("mmax", LEVELS)), **kwargs,
        )

    def __call__(self, img: Image.Image) -> Image.Image:
        for _ in range(self.num_layers):
            name = self.ops[_randint(0, len(self.ops) - 1, self.generator)]
            if self.prob < 1.0 and _uniform(0.0, 1.0, self.generator) > self.prob:
                continue
            img = augment_op(name, img, self._draw_magnitude(), negate=_uniform(0.0, 1.0, self.generator) > 0.5,
                             fill=self.fill, resample=self._resample())
        return img

    def _draw_magnitude(self) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = _uniform(0.0, magnitude, self.generator)
        elif self.magnitude_std > 0:
            magnitude += self.magnitude_std * float(torch.randn((), dtype=torch.float64, generator=self.generator))
        return max(0.0, min(magnitude, self.magnitude_max))

    def _resample(self) -> str:
        if self.interpolation is not None:
            return self.interpolation
        return ("bilinear", "bicubic")[_randint(0, 1, self.generator)]
