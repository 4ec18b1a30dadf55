"""Crash-safe files: a file is on disk whole or not at all, whenever the process is killed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["fsync", "replaced_atomically", "write_json_atomically"]


def fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to. When the block ends the file is
    synced to disk and renamed over ``path``, and the directory synced: ``path`` is always either
    absent, its old contents or all of the new ones. If the block raises, ``path`` is untouched
    (an OSError that names no file, or the temporary one, is raised again naming ``path``)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        yield temporary
        fsync(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno is not None and error.filename in (None, str(temporary)):  # a full disk, say: name the file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def write_json_atomically(path: Path, value: Mapping[str, Any]) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")

