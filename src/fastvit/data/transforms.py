"""Transform steps, each a small callable with timm's (torchvision's) name and behaviour on PIL images:
resize, crop, flip, colour jitter, to-tensor, normalise; and the split of a transform into a per-image
uint8 part and a per-batch float part."""

from __future__ import annotations

import functools
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
    "ResizePlan",
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
    """Convert any PIL mode to RGB the way :func:`load_image` does. An RGB image passes as it is,
    even when it carries a transparent colour: ``convert("RGB")`` of a palette or grey image with
    one keeps it in ``info``, and timm's transform leaves such pixels alone."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else to_rgb(img)


@dataclass(frozen=True)
class ResizePlan:
    """What a resizing step does to one image: the region ``box`` (left, upper, right, lower) of
    the image is resized to ``size`` (width, height) with ``interpolation``. A step plans from the
    image's size alone, so a decoder can plan before decoding (see :mod:`fastvit.data.decoding`)."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    interpolation: str

    def __call__(self, img: Image.Image) -> Image.Image:
        region = img if self.box == (0, 0, *img.size) else img.crop(self.box)
        return region.resize(self.size, RESAMPLING[self.interpolation])


@dataclass
class Resize:
    """Resize to ``size``: an int sets the shorter side and keeps the aspect ratio, the longer
    side being truncated to ``int(size * long / short)`` as torchvision does; an (h, w) pair is
    the exact output size."""

    size: int | tuple[int, int]
    interpolation: str = "bilinear"

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.plan(*img.size)(img)

    def plan(self, width: int, height: int) -> ResizePlan:
        if isinstance(self.size, int):
            short, long = min(width, height), max(width, height)
            new_long = int(self.size * long / short)
            new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        else:
            new_size = (self.size[1], self.size[0])
        return ResizePlan((0, 0, width, height), new_size, self.interpolation)


@dataclass
class ResizeKeepRatio:
    """Resize keeping the aspect ratio so that the image fits (h, w) ``size``: the side that is
    relatively shorter (``longest=False``) or longer (``longest=True``) matches its target;
    sides are rounded, as timm's ``ResizeKeepRatio`` does."""

    size: tuple[int, int]
    interpolation: str = "bilinear"
    longest: bool = False

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.plan(*img.size)(img)

    def plan(self, width: int, height: int) -> ResizePlan:
        ratios = (height / self.size[0], width / self.size[1])
        ratio = max(ratios) if self.longest else min(ratios)
        return ResizePlan((0, 0, width, height), (round(width / ratio), round(height / ratio)), self.interpolation)


@dataclass
class CenterCrop:
    """Crop the centre (h, w) ``size``, padding with ``fill`` first where the image is smaller.
    Offsets are ``int(round((H - h) / 2))`` and padding puts the odd pixel right/bottom,
    as torchvision does."""

    size: tuple[int, int]
    fill: tuple[int, int, int] = (0, 0, 0)

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        """Crop a ``PIL.Image``, or a uint8 tensor (3, H, W) the same way."""
        if isinstance(img, torch.Tensor):
            return self._crop_tensor(img)
        crop_h, crop_w = self.size
        width, height = img.size
        if crop_w > width or crop_h > height:
            padded = Image.new(img.mode, (max(width, crop_w), max(height, crop_h)), self.fill)
            padded.paste(img, (max(crop_w - width, 0) // 2, max(crop_h - height, 0) // 2))
            img = padded
        left, top = self._corner(*img.size)
        return img.crop((left, top, left + crop_w, top + crop_h))

    def _crop_tensor(self, img: torch.Tensor) -> torch.Tensor:
        crop_h, crop_w = self.size
        height, width = img.shape[-2:]
        if crop_w > width or crop_h > height:
            padded = torch.empty((3, max(height, crop_h), max(width, crop_w)), dtype=img.dtype)
            padded.copy_(torch.tensor(self.fill, dtype=img.dtype).view(3, 1, 1))
            top, left = max(crop_h - height, 0) // 2, max(crop_w - width, 0) // 2
            padded[:, top : top + height, left : left + width] = img
            img = padded
        left, top = self._corner(img.shape[-1], img.shape[-2])
        return img[:, top : top + crop_h, left : left + crop_w]

    def _corner(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the crop in an image at least as large as it."""
        return int(round((width - self.size[1]) / 2)), int(round((height - self.size[0]) / 2))


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
        return self.plan(*img.size)(img)

    def plan(self, width: int, height: int) -> ResizePlan:
        """A random region of an image of this size (and the interpolation, for 'random')."""
        top, left, box_height, box_width = self.sample_box(width, height)
        interpolation = self.interpolation
        if interpolation == "random":
            interpolation = _RANDOM_INTERPOLATIONS[_randint(0, len(_RANDOM_INTERPOLATIONS) - 1, self.generator)]
        return ResizePlan((left, top, left + box_width, top + box_height), (self.size[1], self.size[0]), interpolation)

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
        return self.apply_(tensor.clone())

    def apply_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Normalise ``tensor`` in place (the same values as calling the step)."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)


class ToUint8Tensor:
    """RGB ``PIL.Image`` -> uint8 tensor (3, H, W): the per-image end of a split transform. The
    tensor is a view of an (H, W, 3) array, the layout a channels-last batch stacks without
    transposing; a tensor (from a fast decoder's resize) passes through."""

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return img
        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)


@dataclass
class BatchToFloat:
    """uint8 (B, 3, H, W) -> what ``ToTensor`` then ``Normalize`` give per image, bit for bit, in
    the batch's memory format (channels-last stays channels-last)."""

    normalize: Normalize

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.is_contiguous() or not batch.is_contiguous(memory_format=torch.channels_last):
            return self.normalize.apply_(batch.to(torch.float32).div_(255))  # one new tensor, then in place
        # Channels-last: the channel is the innermost dimension, and broadcasting along one of
        # length 3 does not vectorise; the same operations on rows of (H * W * 3) values, with
        # mean and std repeated to match, do (about 3x faster, the same values).
        size, channels, height, width = batch.shape
        pixels = batch.permute(0, 2, 3, 1).reshape(size, height * width * channels).to(torch.float32).div_(255)
        mean, std = (_repeated(values, height * width) for values in (self.normalize.mean, self.normalize.std))
        return pixels.sub_(mean).div_(std).view(size, height, width, channels).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=8)
def _repeated(values: tuple[float, ...], times: int) -> torch.Tensor:
    """``values`` repeated ``times`` times, as float32 (shared: never modify it)."""
    return torch.tensor(values, dtype=torch.float32).repeat(times)


def split_per_batch(transform: Compose) -> tuple[Compose, Callable[[torch.Tensor], torch.Tensor]]:
    """Split a transform ending in ``ToTensor, Normalize`` into a per-image part that ends in a
    uint8 tensor and a per-batch part that turns a stack of those into the same float values.
    Decoding workers then ship a quarter of the bytes and the float maths runs once per batch.
    Other transforms are returned whole, with an identity per-batch part."""
    steps = transform.transforms
    if len(steps) >= 2 and isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize):
        return Compose([*steps[:-2], ToUint8Tensor()]), BatchToFloat(steps[-1])
    return transform, _unchanged


def _unchanged(batch: torch.Tensor) -> torch.Tensor:
    return batch


