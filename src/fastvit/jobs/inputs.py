"""A job's inputs: files, folders, glob patterns and lists of paths, expanded in the order results are written."""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Sequence

from ..errors import FastViTError

__all__ = ["IMAGE_EXTENSIONS", "collect_inputs"]

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .bmp .dib .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .qoi .avif .jp2 .j2k"
    .split()
)
"""File name extensions (any case) taken from folders; files given by name or glob are taken whatever their name."""

_GLOB_MAGIC = re.compile(r"[*?[]")

# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def collect_inputs(sources: Sequence[str], files_from: str | None = None) -> list[str]:
    """The paths of a job's input images, in the order their results are written.

    Each source in turn: an existing file as given; a folder's images (by extension, see
    :data:`IMAGE_EXTENSIONS`; hidden files and folders left out), recursively, sorted; a glob
    pattern's matches (``**`` spans folders), sorted, a matched folder taken as a folder. Then the
    lines of the text file ``files_from`` (``'-'``: standard input), one path per line, blank
    lines ignored; these are not checked here: a missing one is recorded as a bad file.

    Raises:
        FastViTError: a source that neither exists nor is a glob pattern, a folder that cannot be
            read, an unreadable list, or no input at all.
    """
    paths = [path for source in sources for path in _expand_source(source)]
    if files_from is not None:
        paths += _read_path_list(files_from)
    if not paths:
        raise FastViTError("no input images: give image files, folders, glob patterns or --files-from LIST")
    return paths


def _expand_source(source: str) -> list[str]:
    if os.path.isdir(source):
        return _images_under(source)
    if os.path.lexists(source):
        return [source]
    if _GLOB_MAGIC.search(source):
        matches = sorted(glob.glob(source, recursive=True))
        return [path for match in matches for path in (_images_under(match) if os.path.isdir(match) else [match])]
    raise FastViTError(f"no such file or directory: {source!r}")


def _images_under(folder: str) -> list[str]:
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


def _read_path_list(name: str) -> list[str]:
    try:
        if name == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(name, encoding="utf-8", errors="surrogateescape") as file:
                lines = file.read().splitlines()
    except OSError as error:
        raise FastViTError(f"cannot read the list of files {name!r}: {error.strerror}") from error
    return [line for line in lines if line.strip()]
