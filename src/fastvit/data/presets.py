"""``create_transform``: the eval transform of a model's weights (timm's, bit for bit) and the training
augmentation for fine-tuning, built from the steps in :mod:`fastvit.data.transforms`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from ..models.variants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .augment import RandAugment, RandomErasing
from .config import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT
from .transforms import (
    RESAMPLING,
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeKeepRatio,
    ToRGB,
    ToTensor,
)

__all__ = ["create_transform"]


# timm options fastvit does not implement, with the values that leave timm's transform unchanged:
# a call from timm code with those values works, any other value is refused.
_NEUTRAL_TIMM_OPTIONS: dict[str, tuple[Any, ...]] = {
    "no_aug": (False,),
    "train_crop_mode": (None, "rrc"),
    "vflip": (0, 0.0),
    "color_jitter_prob": (None,),
    "grayscale_prob": (0, 0.0),
    "gaussian_blur_prob": (0, 0.0),
    "re_num_splits": (0,),
    "crop_border_pixels": (None, 0),
    "tf_preprocessing": (False,),
    "use_prefetcher": (False,),
    "normalize": (True,),
    "separate": (False,),
    "naflex": (False,),
    "patchify": (False,),
}


def create_transform(
    input_size: int | Sequence[int] = 224,
    is_training: bool = False,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    crop_pct: float | None = None,
    crop_mode: str | None = None,
    scale: tuple[float, float] | None = (0.08, 1.0),
    ratio: tuple[float, float] | None = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float | Sequence[float] | None = 0.4,
    generator: torch.Generator | None = None,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    re_mode: str = "const",
    re_count: int = 1,
    **kwargs: Any,
) -> Compose:
    """A preprocessing transform ``PIL.Image -> float32 tensor (3, H, W)``, as timm builds it.

    Pass the dict of :func:`resolve_data_config` as ``**cfg``. Non-RGB images are converted as by
    :func:`load_image`.

    Eval (``is_training=False``) is timm's: resize to ``floor(size / crop_pct)`` and take the
    central (H, W) crop, where ``crop_mode`` is ``'center'`` (shorter side resized, aspect kept),
    ``'squash'`` (both sides resized) or ``'border'`` (longer side resized, padded with the mean
    colour); then scale to [0, 1] and normalise with ``mean``/``std``.

    Training adds augmentation for fine-tuning: a random resized crop (``scale``, ``ratio``), a
    horizontal flip with probability ``hflip`` and colour jitter (``color_jitter``: one factor for
    brightness, contrast and saturation, or a 3- or 4-tuple with hue; None or 0 disables it).
    ``auto_augment`` adds timm's RandAugment after the flip (``'rand-m9-mstd0.5-inc1'``, see
    :class:`RandAugment`; it replaces the colour jitter, as in timm), filling with the ``mean``
    colour. With ``re_prob`` > 0, random erasing follows the normalisation (:class:`RandomErasing`:
    ``re_mode`` 'const', 'rand' or 'pixel', up to ``re_count`` rectangles), as in timm.
    Random draws use ``generator``, or torch's global generator when None (which DataLoader
    seeds differently in each worker; one shared generator would repeat itself across workers).

    ``interpolation`` is one of nearest, bilinear, bicubic, box, hamming, lanczos, or 'random'
    (bilinear or bicubic per image) for training. timm options not implemented here are accepted
    in ``kwargs`` only with their neutral values (``use_prefetcher=False``, ``vflip=0`` ...).
    """
    _check_timm_options(kwargs)
    img_size = _image_size(input_size)
    valid = set(RESAMPLING) | ({"random"} if is_training else set())
    if interpolation not in valid:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(valid)}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")

    if (re_prob > 0 or auto_augment) and not is_training:
        raise ValueError("re_prob and auto_augment are training augmentations (is_training=True)")
    if is_training:
        jitter = None if auto_augment else color_jitter  # RandAugment replaces the colour jitter, as in timm
        steps = _train_steps(img_size, interpolation, scale, ratio, hflip, jitter, generator)
        if auto_augment:
            fill = tuple(min(255, round(255 * m)) for m in mean)
            steps.append(RandAugment.from_config(
                auto_augment, fill=fill, interpolation=None if interpolation == "random" else interpolation,
                generator=generator,
            ))
    else:
        steps = _eval_steps(img_size, interpolation, crop_pct or DEFAULT_CROP_PCT, crop_mode or DEFAULT_CROP_MODE, mean)
    erasing = [RandomErasing(re_prob, re_mode, re_count, generator=generator)] if re_prob > 0 else []
    return Compose([ToRGB(), *steps, ToTensor(), Normalize(mean, std), *erasing])


def _check_timm_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in _NEUTRAL_TIMM_OPTIONS:
            raise TypeError(f"create_transform() got an unexpected keyword argument {key!r}")
        if value not in _NEUTRAL_TIMM_OPTIONS[key]:
            raise ValueError(f"create_transform: timm option {key}={value!r} is not supported by fastvit")


def _image_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int, (H, W) or (C, H, W)."""
    if isinstance(input_size, int):
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        return input_size, input_size
    size = tuple(int(s) for s in input_size)
    if len(size) == 3 and size[0] != 3:
        raise ValueError(f"fastvit transforms produce RGB images; input_size {size} has {size[0]} channels")
    if len(size) not in (2, 3) or min(size) < 1:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W) of positive sides, got {input_size!r}")
    return size[-2], size[-1]


def _eval_steps(
    img_size: tuple[int, int], interpolation: str, crop_pct: float, crop_mode: str, mean: tuple[float, ...]
) -> list[Callable[[Image.Image], Image.Image]]:
    if crop_pct <= 0:
        raise ValueError(f"crop_pct must be positive, got {crop_pct}")
    scale_size = (math.floor(img_size[0] / crop_pct), math.floor(img_size[1] / crop_pct))
    if crop_mode == "squash":
        return [Resize(scale_size, interpolation), CenterCrop(img_size)]
    if crop_mode == "border":
        fill = tuple(round(255 * m) for m in mean)
        return [ResizeKeepRatio(scale_size, interpolation, longest=True), CenterCrop(img_size, fill)]
    if crop_mode != "center":
        raise ValueError(f"unknown crop_mode {crop_mode!r}; expected 'center', 'squash' or 'border'")
    if scale_size[0] == scale_size[1]:
        return [Resize(scale_size[0], interpolation), CenterCrop(img_size)]
    return [ResizeKeepRatio(scale_size, interpolation), CenterCrop(img_size)]


def _train_steps(
    img_size: tuple[int, int],
    interpolation: str,
    scale: tuple[float, float] | None,
    ratio: tuple[float, float] | None,
    hflip: float,
    color_jitter: float | Sequence[float] | None,
    generator: torch.Generator | None,
) -> list[Callable[[Image.Image], Image.Image]]:
    scale = tuple(scale or (0.08, 1.0))
    ratio = tuple(ratio or (3 / 4, 4 / 3))
    steps: list[Callable[[Image.Image], Image.Image]] = [
        RandomResizedCrop(img_size, scale, ratio, interpolation, generator)
    ]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip, generator))
    jitter = _jitter_factors(color_jitter)
    if any(jitter):
        steps.append(ColorJitter(*jitter, generator=generator))
    return steps


def _jitter_factors(color_jitter: float | Sequence[float] | None) -> tuple[float, ...]:
    """(brightness, contrast, saturation[, hue]) from timm's ``color_jitter`` argument."""
    if color_jitter is None:
        return ()
    if isinstance(color_jitter, (int, float)):
        return (float(color_jitter),) * 3
    if len(color_jitter) not in (3, 4):
        raise ValueError(f"color_jitter must be a number or 3 or 4 numbers, got {color_jitter!r}")
    return tuple(float(x) for x in color_jitter)


