"""A job's inputs: files, folders, glob patterns and lists of paths, expanded in the order results are written."""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Sequence

from ..data import image_files_under
from ..errors import FastViTError

__all__ = ["collect_inputs"]

_GLOB_MAGIC = re.compile(r"[*?[]")

# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def collect_inputs(sources: Sequence[str], files_from: str | None = None) -> list[str]:
    """The paths of a job's input images, in the order their results are written.

    Each source in turn: an existing file as given; a folder's images (by extension, see
    :data:`fastvit.data.loading.IMAGE_EXTENSIONS`; hidden files and folders left out), recursively, sorted; a glob
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
        return image_files_under(source)
    if os.path.lexists(source):
        return [source]
    if _GLOB_MAGIC.search(source):
        matches = sorted(glob.glob(source, recursive=True))
        return [path for match in matches for path in (image_files_under(match) if os.path.isdir(match) else [match])]
    raise FastViTError(f"no such file or directory: {source!r}")


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
