"""Image loading, preprocessing and ImageNet-1k labels, under timm's names.

* :func:`load_image` opens any image file as an RGB ``PIL.Image`` or raises
  :class:`~fastvit.errors.ImageLoadError`.
* :func:`resolve_data_config` / :func:`resolve_model_data_config` read a model's preprocessing
  settings from its ``pretrained_cfg``; :func:`create_transform` turns them into a callable
  ``PIL.Image -> torch.Tensor``. The eval transform reproduces timm's (torchvision on PIL images)
  bit for bit; it is written with Pillow, NumPy and torch only.
* :func:`imagenet_classes` / :func:`imagenet_synsets` give the 1000 ImageNet-1k labels.

Typical use::

    cfg = resolve_data_config(model=model)
    transform = create_transform(**cfg)
    batch = transform(load_image("cat.jpg")).unsqueeze(0)
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError
from .variants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = [
    "DEFAULT_CROP_MODE",
    "DEFAULT_CROP_PCT",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
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
    "create_transform",
    "imagenet_classes",
    "imagenet_synsets",
    "load_image",
    "resolve_data_config",
    "resolve_model_data_config",
    "split_per_batch",
]

_logger = logging.getLogger(__name__)

DEFAULT_CROP_PCT = 0.875
DEFAULT_CROP_MODE = "center"
DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_INTERPOLATION = "bicubic"

# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

# Integer and float modes Pillow would clip to 0..255 when converting; each value below is the
# one that maps to white (255). "I" comes from 16-bit sources, so it shares their range.
_WHITE_LEVEL = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as a fully decoded RGB ``PIL.Image``.

    Any Pillow mode is accepted. The EXIF orientation is applied (phone photos come out upright).
    Transparent pixels are composited on white, the usual page background, so that a logo or a
    cut-out object is not turned into a black silhouette. 16-bit images (``I;16``, and ``I``) are
    scaled from 0..65535 to 0..255, and float images (``F``) from 0..1 to 0..255, instead of
    being clipped. CMYK uses Pillow's plain conversion (ICC profiles are not applied).

    Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays on and is enforced
    strictly: any image over the limit is refused, not only those over twice the limit.

    Raises:
        ImageLoadError: the file is missing, unreadable, empty, not an image, truncated or corrupt,
            or too large; the one-line message names the file and the reason.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x the limit; make that a refusal as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name) as opened:
                opened.load()  # decode everything now, so truncated files fail here
                upright = ImageOps.exif_transpose(opened)
        return _to_rgb(upright)
    except Exception as exc:  # Pillow's decoders raise many exception types on corrupt files
        raise ImageLoadError(name, _load_failure_reason(name, exc)) from exc


def _load_failure_reason(name: str, exc: Exception) -> str:
    """A short, one-line explanation of why ``load_image`` failed."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        limit = Image.MAX_IMAGE_PIXELS
        return f"refused as a possible decompression bomb (over PIL.Image.MAX_IMAGE_PIXELS = {limit} pixels)"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "the file is empty" if os.path.getsize(name) == 0 else "not an image format Pillow can read"
    detail = " ".join(str(exc).split()) or "no details"
    return f"cannot decode it ({type(exc).__name__}: {detail})"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: rescale high bit depths, composite transparency on white."""
    if img.mode in _WHITE_LEVEL:
        img = _rescale_to_8bit(img, _WHITE_LEVEL[img.mode])
    if img.has_transparency_data:  # an alpha band, or a transparent colour or palette entry
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def _rescale_to_8bit(img: Image.Image, white_level: float) -> Image.Image:
    """A single-channel high-depth image as mode L, ``white_level`` mapping to 255."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    scaled = np.clip(np.rint(values * (255.0 / white_level)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8))


# ----------------------------------------------------------------------------------------------
# Data config
# ----------------------------------------------------------------------------------------------


def resolve_data_config(
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    model: Any = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """The preprocessing settings of a model, as timm's ``resolve_data_config`` resolves them.

    Settings come from ``pretrained_cfg`` or, when that is not given, from ``model``: a module
    carrying a ``pretrained_cfg`` dict, or a model name such as ``"fastvit_t8.apple_in1k"``.
    Entries of ``args`` that are not None override both (``input_size``, ``img_size``,
    ``in_chans``/``chans``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).
    With ``use_test_size`` the cfg's ``test_input_size`` and ``test_crop_pct`` are preferred.

    Returns:
        A dict with ``input_size`` (C, H, W), ``interpolation``, ``mean``, ``std``, ``crop_pct``
        and ``crop_mode``, ready for ``create_transform(**config)``. Missing values take timm's
        defaults: (3, 224, 224), bicubic, ImageNet mean/std, crop_pct 0.875, crop_mode center.
    """
    args = {key: value for key, value in (args or {}).items() if value is not None}
    cfg = dict(pretrained_cfg) if pretrained_cfg else _model_pretrained_cfg(model)
    in_chans = args.get("in_chans", args.get("chans", DEFAULT_INPUT_SIZE[0]))
    config = {
        "input_size": _resolve_input_size(args, cfg, in_chans, use_test_size),
        "interpolation": args.get("interpolation") or cfg.get("interpolation") or DEFAULT_INTERPOLATION,
        "mean": _resolve_stats(args.get("mean"), cfg.get("mean"), IMAGENET_DEFAULT_MEAN, in_chans),
        "std": _resolve_stats(args.get("std"), cfg.get("std"), IMAGENET_DEFAULT_STD, in_chans),
        "crop_pct": args.get("crop_pct") or _cfg_value(cfg, "crop_pct", use_test_size) or DEFAULT_CROP_PCT,
        "crop_mode": args.get("crop_mode") or cfg.get("crop_mode") or DEFAULT_CROP_MODE,
    }
    if verbose:
        _logger.info("Data config: %s", ", ".join(f"{key}={value}" for key, value in config.items()))
    return config


def resolve_model_data_config(
    model: Any,
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """:func:`resolve_data_config` with the model first, as in timm."""
    return resolve_data_config(args, pretrained_cfg, model, use_test_size, verbose)


def _model_pretrained_cfg(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, str):
        from .registry import get_pretrained_cfg  # imported here: the registry builds models

        return dict(get_pretrained_cfg(model))
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _cfg_value(cfg: Mapping[str, Any], key: str, use_test_size: bool) -> Any:
    """``cfg[key]``, or ``cfg['test_' + key]`` when asked for and present."""
    if use_test_size and cfg.get(f"test_{key}") is not None:
        return cfg[f"test_{key}"]
    return cfg.get(key)


def _resolve_input_size(
    args: Mapping[str, Any], cfg: Mapping[str, Any], in_chans: int, use_test_size: bool
) -> tuple[int, int, int]:
    if "input_size" in args:
        size = tuple(args["input_size"])
        if len(size) != 3:
            raise ValueError(f"input_size must be (channels, height, width), got {args['input_size']!r}")
        return size
    if "img_size" in args:
        return (in_chans, args["img_size"], args["img_size"])
    return tuple(_cfg_value(cfg, "input_size", use_test_size) or (in_chans, *DEFAULT_INPUT_SIZE[1:]))


def _resolve_stats(
    arg: Sequence[float] | None, cfg_value: Sequence[float] | None, default: tuple[float, ...], in_chans: int
) -> tuple[float, ...]:
    """Mean or std: the argument (one value is repeated per channel), else the cfg's, else default."""
    if arg is None:
        return tuple(cfg_value or default)
    values = tuple(float(v) for v in arg)
    if len(values) == 1:
        return values * in_chans
    if len(values) != in_chans:
        raise ValueError(f"expected 1 or {in_chans} normalisation values, got {len(values)}")
    return values


# ----------------------------------------------------------------------------------------------
# Transform steps (PIL in, PIL out, except the last two)
# ----------------------------------------------------------------------------------------------

_RESAMPLING = {
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
        return _to_rgb(img)


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
        return img.resize(new_size, _RESAMPLING[self.interpolation])


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
        return img.resize((round(width / ratio), round(height / ratio)), _RESAMPLING[self.interpolation])


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
        return region.resize((self.size[1], self.size[0]), _RESAMPLING[interpolation])

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


# ----------------------------------------------------------------------------------------------
# create_transform
# ----------------------------------------------------------------------------------------------

# timm options fastvit does not implement, with the values that leave timm's transform unchanged:
# a call from timm code with those values works, any other value is refused.
_NEUTRAL_TIMM_OPTIONS: dict[str, tuple[Any, ...]] = {
    "no_aug": (False,),
    "train_crop_mode": (None, "rrc"),
    "vflip": (0, 0.0),
    "color_jitter_prob": (None,),
    "grayscale_prob": (0, 0.0),
    "gaussian_blur_prob": (0, 0.0),
    "auto_augment": (None, ""),
    "re_prob": (0, 0.0),
    "re_mode": ("const",),
    "re_count": (1,),
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
    Random draws use ``generator``, or torch's global generator when None (which DataLoader
    seeds differently in each worker; one shared generator would repeat itself across workers).

    ``interpolation`` is one of nearest, bilinear, bicubic, box, hamming, lanczos, or 'random'
    (bilinear or bicubic per image) for training. timm options not implemented here are accepted
    in ``kwargs`` only with their neutral values (``use_prefetcher=False``, ``re_prob=0`` ...).
    """
    _check_timm_options(kwargs)
    img_size = _image_size(input_size)
    valid = set(_RESAMPLING) | ({"random"} if is_training else set())
    if interpolation not in valid:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(valid)}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")

    if is_training:
        steps = _train_steps(img_size, interpolation, scale, ratio, hflip, color_jitter, generator)
    else:
        steps = _eval_steps(img_size, interpolation, crop_pct or DEFAULT_CROP_PCT, crop_mode or DEFAULT_CROP_MODE, mean)
    return Compose([ToRGB(), *steps, ToTensor(), Normalize(mean, std)])


def _check_timm_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in _NEUTRAL_TIMM_OPTIONS:
            raise TypeError(f"create_transform() got an unexpected keyword argument {key!r}")
        if value not in _NEUTRAL_TIMM_OPTIONS[key]:
            raise ValueError(f"create_transform: timm option {key}={value!r} is not supported by fastvit")


def _image_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int, (H, W) or (C, H, W)."""
    if isinstance(input_size, int):
        return input_size, input_size
    size = tuple(int(s) for s in input_size)
    if len(size) == 3 and size[0] != 3:
        raise ValueError(f"fastvit transforms produce RGB images; input_size {size} has {size[0]} channels")
    if len(size) not in (2, 3):
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")
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


# ----------------------------------------------------------------------------------------------
# ImageNet-1k labels
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    """(synset, names) per class index, read from the packaged imagenet1k_classes.tsv."""
    text = resources.files(__package__).joinpath("imagenet1k_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    if [int(index) for index, _, _ in rows] != list(range(1000)):
        raise RuntimeError("imagenet1k_classes.tsv is damaged: expected indices 0..999 in order")
    return tuple((synset, names) for _, synset, names in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names by index, each the full comma-separated list of names
    (index 281 is ``'tabby, tabby cat'``); ``name.split(',')[0]`` gives the short name."""
    return [names for _, names in _imagenet_table()]


def imagenet_synsets() -> list[str]:
    """The 1000 WordNet synset ids of ImageNet-1k by index (index 281 is ``'n02123045'``)."""
    return [synset for synset, _ in _imagenet_table()]
