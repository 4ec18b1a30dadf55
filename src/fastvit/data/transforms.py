"""Transform steps, each a small callable with timm's (torchvision's) name and behaviour on PIL images:
resize, crop, flip, colour jitter, to-tensor, normalise; and the split of a transform into a per-image
uint8 part and a per-batch float part."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .loading import to_rgb

__all__ = [
    "RESAMPLING",
    "BatchToFloat",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeKeepRatio",
    "ToRGB",
    "ToTensor",
    "ToUint8Tensor",
    "split_per_batch",
]

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_RANDOM_INTERPOLATIONS = ("bilinear", "bicubic")  # what 'random' picks from, as in timm


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), dtype=torch.float64, generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """A random integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


class Compose:
    """Apply ``transforms`` in order. ``transforms`` is a plain list and may be edited."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for transform in self.transforms:
            img = transform(img)
        return img

    def __repr__(self) -> str:
        lines = "".join(f"    {transform!r}\n" for transform in self.transforms)
        return f"{type(self).__name__}(\n{lines})"


@dataclass
class ToRGB:
    """Convert any PIL mode to RGB the way :func:`load_image` does (no-op for RGB)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)


@dataclass
class Resize:
    """Resize to ``size``: an int sets the shorter side and keeps the aspect ratio, the longer
    side being truncated to ``int(size * long / short)`` as torchvision does; an (h, w) pair is
    the exact output size."""

    size: int | tuple[int, int]
    interpolation: str = "bilinear"

    def __call__(self, img: Image.Image) -> Image.Image:
        if isinstance(self.size, int):
            width, height = img.size
            short, long = min(width, height), max(width, height)
            new_long = int(self.size * long / short)
            new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        else:
            new_size = (self.size[1], self.size[0])
        return img.resize(new_size, RESAMPLING[self.interpolation])


@dataclass
class ResizeKeepRatio:
    """Resize keeping the aspect ratio so that the image fits (h, w) ``size``: the side that is
    relatively shorter (``longest=False``) or longer (``longest=True``) matches its target;
    sides are rounded, as timm's ``ResizeKeepRatio`` does."""

    size: tuple[int, int]
    interpolation: str = "bilinear"
    longest: bool = False

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        ratios = (height / self.size[0], width / self.size[1])
        ratio = max(ratios) if self.longest else min(ratios)
        return img.resize((round(width / ratio), round(height / ratio)), RESAMPLING[self.interpolation])


@dataclass
class CenterCrop:
    """Crop the centre (h, w) ``size``, padding with ``fill`` first where the image is smaller.
    Offsets are ``int(round((H - h) / 2))`` and padding puts the odd pixel right/bottom,
    as torchvision does."""

    size: tuple[int, int]
    fill: tuple[int, int, int] = (0, 0, 0)

    def __call__(self, img: Image.Image) -> Image.Image:
        crop_h, crop_w = self.size
        width, height = img.size
        if crop_w > width or crop_h > height:
            padded = Image.new(img.mode, (max(width, crop_w), max(height, crop_h)), self.fill)
            padded.paste(img, (max(crop_w - width, 0) // 2, max(crop_h - height, 0) // 2))
            img, (width, height) = padded, padded.size
        top = int(round((height - crop_h) / 2))
        left = int(round((width - crop_w) / 2))
        return img.crop((left, top, left + crop_w, top + crop_h))


@dataclass
class RandomResizedCrop:
    """Crop a random region and resize it to (h, w) ``size`` (Inception-style augmentation).

    The region covers a fraction of the image area drawn uniformly from ``scale``, with an
    aspect ratio drawn log-uniformly from ``ratio``; after 10 draws that do not fit, a central
    crop clamped to ``ratio`` is taken. ``interpolation='random'`` picks bilinear or bicubic
    per image.
    """

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, height, width = self.sample_box(*img.size)
        interpolation = self.interpolation
        if interpolation == "random":
            interpolation = _RANDOM_INTERPOLATIONS[_randint(0, len(_RANDOM_INTERPOLATIONS) - 1, self.generator)]
        region = img.crop((left, top, left + width, top + height))
        return region.resize((self.size[1], self.size[0]), RESAMPLING[interpolation])

    def sample_box(self, img_width: int, img_height: int) -> tuple[int, int, int, int]:
        """A random crop box (top, left, height, width) for an image of the given size."""
        area = img_width * img_height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale, self.generator)
            aspect = math.exp(_uniform(*log_ratio, self.generator))
            width = int(round(math.sqrt(target_area * aspect)))
            height = int(round(math.sqrt(target_area / aspect)))
            if 0 < width <= img_width and 0 < height <= img_height:
                top = _randint(0, img_height - height, self.generator)
                left = _randint(0, img_width - width, self.generator)
                return top, left, height, width
        return self._central_box(img_width, img_height)

    def _central_box(self, img_width: int, img_height: int) -> tuple[int, int, int, int]:
        width, height = img_width, img_height
        if img_width / img_height < min(self.ratio):
            height = int(round(width / min(self.ratio)))
        elif img_width / img_height > max(self.ratio):
            width = int(round(height * max(self.ratio)))
        return (img_height - height) // 2, (img_width - width) // 2, height, width


@dataclass
class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    p: float = 0.5
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def __call__(self, img: Image.Image) -> Image.Image:
        if _uniform(0.0, 1.0, self.generator) < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


@dataclass
class ColorJitter:
    """Randomly change brightness, contrast, saturation and hue, in a random order.

    Brightness, contrast and saturation factors are drawn from ``[max(0, 1 - x), 1 + x]``, the
    hue shift from ``[-hue, hue]`` (a fraction of the hue circle, at most 0.5); 0 disables one.
    The adjustments are torchvision's for PIL images (Pillow's ``ImageEnhance``, HSV hue shift).
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise ValueError(f"invalid colour jitter {self!r}: factors must be >= 0 and hue <= 0.5")

    def __call__(self, img: Image.Image) -> Image.Image:
        adjustments = self._adjustments()
        for index in torch.randperm(len(adjustments), generator=self.generator).tolist():
            adjust, low, high = adjustments[index]
            img = adjust(img, _uniform(low, high, self.generator))
        return img

    def _adjustments(self) -> list[tuple[Callable[[Image.Image, float], Image.Image], float, float]]:
        """(function, lowest factor, highest factor) of each enabled adjustment."""
        enhancers = [
            (_adjust_brightness, self.brightness),
            (_adjust_contrast, self.contrast),
            (_adjust_saturation, self.saturation),
        ]
        chosen = [(fn, max(0.0, 1.0 - x), 1.0 + x) for fn, x in enhancers if x > 0]
        if self.hue > 0:
            chosen.append((_adjust_hue, -self.hue, self.hue))
        return chosen


def _adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def _adjust_contrast(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(factor)


def _adjust_saturation(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(img).enhance(factor)


def _adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue by ``shift`` of a full turn (HSV hue stored as 0..255, wrapping round)."""
    hue, saturation, value = img.convert("HSV").split()
    rotated = (np.asarray(hue, dtype=np.int16) + int(shift * 255)) % 256
    hsv = Image.merge("HSV", (Image.fromarray(rotated.astype(np.uint8)), saturation, value))
    return hsv.convert(img.mode)


@dataclass
class ToTensor:
    """RGB ``PIL.Image`` -> float32 tensor (3, H, W) with values in [0, 1] (uint8 / 255)."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
        return pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)


@dataclass
class Normalize:
    """``(x - mean) / std`` per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain zeros, got {self.std}")

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.sub(mean).div(std)


class ToUint8Tensor:
    """RGB ``PIL.Image`` -> uint8 tensor (3, H, W): the per-image end of a split transform."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)


@dataclass
class BatchToFloat:
    """uint8 (B, 3, H, W) -> what ``ToTensor`` then ``Normalize`` give per image, bit for bit."""

    normalize: Normalize

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.normalize(batch.to(torch.float32).div(255))


def split_per_batch(transform: Compose) -> tuple[Compose, Callable[[torch.Tensor], torch.Tensor]]:
    """Split a transform ending in ``ToTensor, Normalize`` into a per-image part that ends in a
    uint8 tensor and a per-batch part that turns a stack of those into the same float values.
    Decoding workers then ship a quarter of the bytes and the float maths runs once per batch.
    Other transforms are returned whole, with an identity per-batch part."""
    steps = transform.transforms
    if len(steps) >= 2 and isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize):
        return Compose([*steps[:-2], ToUint8Tensor()]), BatchToFloat(steps[-1])
    return transform, lambda batch: batch


