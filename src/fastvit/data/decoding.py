"""From an image file to the per-image tensor of a model's transform, decoded exactly or fast.

:class:`ImageDecoder` is the one entry point for batch jobs, training and serving: a path, the
file's bytes or a file object in, the uint8 tensor (3, H, W) of the transform's per-image part out;
:func:`stack_images` and :meth:`ImageDecoder.to_float` turn a list of those into the model's input.

``decode="exact"`` (the default) is :func:`load_image` followed by the transform: timm's pixels, bit
for bit. ``decode="fast"`` plans the same resize from the image's header, then takes two shortcuts
that only matter for images much larger than the model's input:

* a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that still leaves at least
  ``REDUCTION_MARGIN`` (2) decoded pixels per output pixel, both ways (Pillow's draft mode): a
  12-megapixel photo for a 256-pixel model decodes at 1/4 scale, several times faster;
* an eval resize (the whole image, bilinear or bicubic) runs as torch's antialiased uint8
  interpolation, several times faster than Pillow's on these sizes, after Pillow's ``reduce()`` by
  the integer factor that keeps the same margin (for images the draft cannot shrink: PNG, WebP,
  or beyond 1/8); other filters and the training crop use Pillow's resize with the same reduction
  (``reducing_gap``), on the exact region of the reduced image.

The fast result differs from the exact one by a few grey levels at most (see the README's tables);
the random draws of a training transform are the same in both modes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..errors import ImageLoadError
from .loading import ImageReader, ImageSource
from .presets import create_transform
from .transforms import (
    RESAMPLING,
    CenterCrop,
    Compose,
    RandomResizedCrop,
    Resize,
    ResizeKeepRatio,
    ResizePlan,
    ToRGB,
    ToUint8Tensor,
    split_per_batch,
)

__all__ = [
    "DECODE_MODES",
    "REDUCTION_MARGIN",
    "ImageDecoder",
    "create_decoder",
    "reduced_size_needed",
    "resize_reduced",
    "stack_images",
]

DECODE_MODES = ("exact", "fast")
REDUCTION_MARGIN = 2
"""A reduced image keeps at least this many pixels per output pixel, both ways, before the final filter."""

MAX_RESIZED_PIXELS = 1 << 26
"""The largest image a transform's resize may make (64 Mpx, 192 MB in RGB), whatever the size of the file:
a 1x10000 PNG of 125 bytes, its shorter side resized to 284 for the crop, would take 2.4 GB. At the other
end, a resize to a side of 0 pixels (the shorter side of a 1x3000 image fitted into 256x256) is refused too."""
_PLANNED_STEPS = (Resize, ResizeKeepRatio, RandomResizedCrop)
_WHOLE_IMAGE_STEPS = (Resize, ResizeKeepRatio)  # whose output grows with the image's aspect ratio
_TORCH_FILTERS = ("bilinear", "bicubic")  # what torch interpolates in uint8 with antialiasing
_SINGLE_STEP_FILTERS = ("nearest", "box")  # resized without Pillow's reduce() step first


class ImageDecoder:
    """An image source -> the per-image part of ``transform`` (a uint8 tensor (3, H, W) for the
    transforms of :func:`create_transform`), decoded the ``decode`` way (``"exact"`` or ``"fast"``,
    see :mod:`fastvit.data.decoding`).

    :attr:`to_float` turns a batch of those (:func:`stack_images`) into what the whole transform
    gives per image. Raises :class:`~fastvit.errors.ImageLoadError` for a file that cannot be read
    or has more than ``max_pixels`` pixels (as :func:`load_image` counts them).
    """

    def __init__(self, transform: Compose, decode: str = "exact", max_pixels: int | None = None):
        if decode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
        self.decode, self.max_pixels = decode, max_pixels
        self.per_image, self.to_float = split_per_batch(transform)
        steps = self.per_image.transforms
        self._resize_at = next((i for i, step in enumerate(steps) if isinstance(step, _PLANNED_STEPS)), len(steps))
        before, after = steps[: self._resize_at], steps[self._resize_at + 1 :]
        if decode == "fast" and (self._resize_at == len(steps) or not all(isinstance(s, ToRGB) for s in before)):
            raise ValueError(
                "decode='fast' needs a transform that starts with Resize, ResizeKeepRatio or RandomResizedCrop "
                "(as create_transform's do)"
            )
        # the eval steps after the resize take tensors too; augmentations work on PIL images
        self._tensor_ok = all(isinstance(step, (CenterCrop, ToUint8Tensor)) for step in after)

    def __call__(self, source: ImageSource) -> Tensor:
        steps = self.per_image.transforms
        with ImageReader(source, self.max_pixels) as reader:
            resize = steps[self._resize_at] if self._resize_at < len(steps) else None
            # planned once: a random crop's plan draws from its generator
            plan = resize.plan(*reader.size) if self.decode == "fast" or isinstance(resize, _WHOLE_IMAGE_STEPS) else None
            if plan is not None and not 0 < plan.size[0] * plan.size[1] <= MAX_RESIZED_PIXELS:
                raise ImageLoadError(reader.name, f"too elongated: {reader.size[0]}x{reader.size[1]} pixels would be "
                                                  f"resized to {plan.size[0]}x{plan.size[1]} before the crop")
            if self.decode == "exact":
                return self.per_image(reader.decode())
            image = reader.decode(min_size=reduced_size_needed(plan, reader.size))
        resized = resize_reduced(image, plan, reader.size, reader.reduction, self._tensor_ok)
        for step in steps[self._resize_at + 1 :]:
            resized = step(resized)
        return resized

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decode={self.decode!r}, transform={self.per_image!r})"


def create_decoder(
    data_config: Mapping[str, Any], decode: str = "exact", max_pixels: int | None = None, **transform_options: Any
) -> ImageDecoder:
    """The :class:`ImageDecoder` of ``create_transform(**data_config, **transform_options)``:
    ``data_config`` from :func:`resolve_data_config`, and for training ``is_training=True`` with
    the augmentation options (``scale``, ``hflip``, ``generator`` ...)."""
    return ImageDecoder(create_transform(**{**data_config, **transform_options}), decode, max_pixels)


def stack_images(images: Sequence[Tensor]) -> Tensor:
    """Per-image uint8 tensors (3, H, W) as one channels-last batch (B, 3, H, W): the layout of the
    arrays they view, so stacking copies rows as they are, and the layout the model runs in."""
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


def reduced_size_needed(plan: ResizePlan, full_size: tuple[int, int]) -> tuple[int, int]:
    """The smallest decoded size (width, height) of a whole image of ``full_size`` that still
    leaves ``REDUCTION_MARGIN`` pixels per output pixel in the region ``plan`` resizes."""
    left, top, right, bottom = plan.box
    return (
        math.ceil(REDUCTION_MARGIN * plan.size[0] * full_size[0] / (right - left)),
        math.ceil(REDUCTION_MARGIN * plan.size[1] * full_size[1] / (bottom - top)),
    )


def resize_reduced(
    image: Image.Image, plan: ResizePlan, full_size: tuple[int, int], reduction: float, tensor_ok: bool = False
) -> Image.Image | Tensor:
    """Carry out ``plan``, made for the full-resolution image, on ``image``: that image decoded at
    1/``reduction`` scale. With ``tensor_ok``, a whole-image bilinear or bicubic resize runs in
    torch and gives a uint8 tensor (3, H, W); anything else gives a ``PIL.Image``."""
    if tensor_ok and plan.box == (0, 0, *full_size) and plan.interpolation in _TORCH_FILTERS:
        factor = int(min(image.width / plan.size[0], image.height / plan.size[1]) // REDUCTION_MARGIN)
        if factor >= 2:
            image = image.reduce(factor)  # pixel i averages pixels i * factor to (i + 1) * factor - 1
            reduction *= factor
        pixels = _rgbx_pixels(image)
        # The reduced image may end in a partial pixel (its sides are rounded up), so its size is
        # not the full image's divided by ``reduction``: give torch the exact scale instead, which
        # places every output pixel where the exact resize does and yields exactly ``plan.size``
        # (1e-9 keeps float rounding from flooring a side one pixel short).
        scale = [out * reduction / full * (1 + 1e-9) for out, full in zip(plan.size[::-1], full_size[::-1])]
        resized = torch.nn.functional.interpolate(pixels, scale_factor=scale, mode=plan.interpolation, antialias=True)
        return resized[0, :3]
    box = tuple(coordinate / reduction for coordinate in plan.box)
    # reduce() is a box filter on a fixed grid: before a box resize it would shift the boxes
    gap = None if plan.interpolation in _SINGLE_STEP_FILTERS else REDUCTION_MARGIN
    return image.resize(plan.size, RESAMPLING[plan.interpolation], box=box, reducing_gap=gap)


def _rgbx_pixels(image: Image.Image) -> Tensor:
    """An RGB image as a channels-last uint8 tensor (1, 4, H, W) of its pixels with a fourth byte
    each: one copy of Pillow's own 4-byte layout (RGB bytes would be packed, then copied again),
    and the layout torch's antialiased uint8 kernel works in."""
    data = image.tobytes("raw", "RGBX")
    with warnings.catch_warnings():  # torch warns (once) that the bytes are read-only: only read here
        warnings.filterwarnings("ignore", "The given buffer is not writable")
        pixels = torch.frombuffer(data, dtype=torch.uint8)
    return pixels.view(1, image.height, image.width, 4).permute(0, 3, 1, 2)
