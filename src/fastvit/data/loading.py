"""Image loading: any image file as a fully decoded, upright RGB ``PIL.Image`` (a JPEG at a reduced DCT
scale when asked: :class:`ImageReader`), or a one-line reason why not."""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import FastViTError, ImageLoadError

__all__ = ["IMAGE_EXTENSIONS", "ImageReader", "ImageSource", "image_files_under", "load_image", "to_rgb"]

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .bmp .dib .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .qoi .avif .jp2 .j2k"
    .split()
)
"""File name extensions (any case) of the images taken from folders."""


def image_files_under(folder: str | os.PathLike[str]) -> list[str]:
    """The image files (by :data:`IMAGE_EXTENSIONS`) in ``folder`` and its subfolders, sorted;
    hidden files and folders are left out.

    Raises:
        FastViTError: a folder that cannot be read.
    """

    def refuse(error: OSError) -> None:
        raise FastViTError(f"cannot read folder {error.filename!r}: {error.strerror}")

    found = []
    for root, folders, files in os.walk(folder, onerror=refuse):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            os.path.join(root, name) for name in files
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)

# Integer and float modes Pillow would clip to 0..255 when converting; each value below is the
# one that maps to white (255). "I" comes from 16-bit sources, so it shares their range.
_WHITE_LEVEL = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


ImageSource = str | os.PathLike[str] | bytes | BinaryIO
"""An image file: a path, the file's bytes, or a binary file object (an upload, say)."""

_PILLOW_LIMIT_LOCK = threading.Lock()
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations whose upright image swaps width and height
T = TypeVar("T")


def load_image(path: ImageSource, max_pixels: int | None = None) -> Image.Image:
    """Open an image file (a path, its bytes, or a binary file object) as a fully decoded RGB
    ``PIL.Image``.

    Any Pillow mode is accepted. The EXIF orientation is applied (phone photos come out upright).
    Transparent pixels are composited on white, the usual page background, so that a logo or a
    cut-out object is not turned into a black silhouette. 16-bit images (``I;16``, and ``I``) are
    scaled from 0..65535 to 0..255, and float images (``F``) from 0..1 to 0..255, instead of
    being clipped. CMYK uses Pillow's plain conversion (ICC profiles are not applied).

    An image of more than ``max_pixels`` pixels is refused as a possible decompression bomb (``None``:
    Pillow's own limit, ``PIL.Image.MAX_IMAGE_PIXELS``; 0: no limit), strictly: Pillow itself only
    warns below twice its limit.

    Raises:
        ImageLoadError: the file is missing, unreadable, empty, not an image, truncated or corrupt,
            or too large; the one-line message names the file (``<bytes>`` or the file object's
            name for data not read from a path) and the reason.
    """
    with ImageReader(path, max_pixels) as reader:
        return reader.decode()


class ImageReader:
    """An image file opened for decoding, as :func:`load_image` reads it: :attr:`size` (upright,
    after the EXIF orientation) is known from the header before any pixel is decoded, so that a
    caller can decide how large a decoded image it needs::

        with ImageReader("photo.jpg") as reader:
            image = reader.decode(min_size=(600, 400))  # a JPEG may come out at 1/2, 1/4 or 1/8 scale

    Raises :class:`ImageLoadError` (when opening, or from :meth:`decode`) as :func:`load_image` does,
    with its ``max_pixels``.
    """

    def __init__(self, source: ImageSource, max_pixels: int | None = None):
        self.max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels or None
        """The pixel limit, checked when the file is opened (None: no limit)."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name, self._source = "<bytes>", io.BytesIO(source)
        elif hasattr(source, "read"):
            self.name, self._source = str(getattr(source, "name", "<stream>")), source
        else:
            self.name = self._source = os.fspath(source)
        self._file, self._turned = self._attempt(self._open)
        self.size: tuple[int, int] = self._file.size[::-1] if self._turned else self._file.size
        """(width, height) of the upright image at full resolution."""
        self.reduction = 1.0
        """How many times smaller :meth:`decode` made the image: 1, 2, 4 or 8 (pixel ``i`` of the
        decoded image covers pixels ``i * reduction`` to ``(i + 1) * reduction`` of the full one)."""

    def decode(self, min_size: tuple[int, int] | None = None) -> Image.Image:
        """The upright RGB image (see :func:`load_image`). With ``min_size`` (width, height), a
        JPEG is decoded at the smallest of the DCT scales 1/2, 1/4 and 1/8 that still leaves at
        least that many pixels both ways (Pillow's draft mode: libjpeg-turbo skips most of the
        inverse DCT, and a pixel of the result covers exactly ``scale x scale`` pixels of the full
        image). Other formats, and JPEGs too small to reduce, are decoded whole."""
        return self._attempt(self._decode, min_size)

    def _open(self) -> tuple[Image.Image, bool]:
        """The opened file (header read, no pixels yet) and whether it is stored a quarter turn from upright."""
        # Pillow reads its limit from a global, in open() and in crop(): set for the opening only, so
        # that a low limit does not refuse the crops of the transforms that follow.
        with _PILLOW_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, self.max_pixels
            try:
                file = Image.open(self._source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        try:
            return file, file.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
        except Exception:
            file.close()
            raise

    def _decode(self, min_size: tuple[int, int] | None) -> Image.Image:
        image = self._file
        if min_size is not None:
            full_width = image.width
            drafted = image.draft(None, min_size[::-1] if self._turned else min_size)
            if drafted is not None:  # a JPEG: (mode, the full image's box in decoded pixels)
                self.reduction = full_width / drafted[1][2]
        image.load()  # decode everything now, so truncated files fail here
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of the whole image
        return to_rgb(image)

    def _attempt(self, step: Callable[..., T], *args: Any) -> T:
        """``step(*args)``; any failure becomes an ImageLoadError with a one-line reason."""
        try:
            with warnings.catch_warnings():
                # Pillow only warns between 1x and 2x the limit; make that a refusal as well.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return step(*args)
        except Exception as exc:  # Pillow's decoders raise many exception types on corrupt files
            raise ImageLoadError(self.name, _load_failure_reason(self._source, exc, self.max_pixels)) from exc

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.__exit__(*exc_info)  # closes a file Pillow opened; the decoded pixels stay


def _load_failure_reason(source: str | BinaryIO, exc: Exception, max_pixels: int | None) -> str:
    """A short, one-line explanation of why ``load_image`` failed."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a possible decompression bomb (over the limit of {max_pixels} pixels)"
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


