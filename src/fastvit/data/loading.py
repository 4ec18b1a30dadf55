"""Image loading: any image file as a fully decoded, upright RGB ``PIL.Image``, or a one-line reason why not."""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError

__all__ = ["ImageSource", "load_image", "to_rgb"]

# Integer and float modes Pillow would clip to 0..255 when converting; each value below is the
# one that maps to white (255). "I" comes from 16-bit sources, so it shares their range.
_WHITE_LEVEL = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


ImageSource = str | os.PathLike[str] | bytes | BinaryIO
"""An image file: a path, the file's bytes, or a binary file object (an upload, say)."""


def load_image(path: ImageSource) -> Image.Image:
    """Open an image file (a path, its bytes, or a binary file object) as a fully decoded RGB
    ``PIL.Image``.

    Any Pillow mode is accepted. The EXIF orientation is applied (phone photos come out upright).
    Transparent pixels are composited on white, the usual page background, so that a logo or a
    cut-out object is not turned into a black silhouette. 16-bit images (``I;16``, and ``I``) are
    scaled from 0..65535 to 0..255, and float images (``F``) from 0..1 to 0..255, instead of
    being clipped. CMYK uses Pillow's plain conversion (ICC profiles are not applied).

    Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays on and is enforced
    strictly: any image over the limit is refused, not only those over twice the limit.

    Raises:
        ImageLoadError: the file is missing, unreadable, empty, not an image, truncated or corrupt,
            or too large; the one-line message names the file (``<bytes>`` or the file object's
            name for data not read from a path) and the reason.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        name, source = "<bytes>", io.BytesIO(path)
    elif hasattr(path, "read"):
        name, source = str(getattr(path, "name", "<stream>")), path
    else:
        name = source = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x the limit; make that a refusal as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                opened.load()  # decode everything now, so truncated files fail here
                upright = ImageOps.exif_transpose(opened)
        return to_rgb(upright)
    except Exception as exc:  # Pillow's decoders raise many exception types on corrupt files
        raise ImageLoadError(name, _load_failure_reason(source, exc)) from exc


def _load_failure_reason(source: str | BinaryIO, exc: Exception) -> str:
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
        return "the file is empty" if _is_empty(source) else "not an image format Pillow can read"
    detail = " ".join(str(exc).split()) or "no details"
    return f"cannot decode it ({type(exc).__name__}: {detail})"


def _is_empty(source: str | BinaryIO) -> bool:
    if isinstance(source, str):
        return os.path.getsize(source) == 0
    source.seek(0, io.SEEK_END)
    return source.tell() == 0


def to_rgb(img: Image.Image) -> Image.Image:
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


