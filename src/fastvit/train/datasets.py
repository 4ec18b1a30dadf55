"""The labelled images of a run: found on disk and checked before training starts (their batches are
made by :mod:`fastvit.train.batches`).

Three ways to give them (classes are the train class names, sorted):

* an ImageFolder: ``DATA/train/<class>/...`` and ``DATA/val/<class>/...``;
* one folder of class folders (``DATA/<class>/...``, or ``DATA/train/<class>/...``) and a fraction
  held out for validation, per class (stratified), drawn from the seed;
* CSV lists of ``path,label`` rows (a ``path,label`` header is optional; relative paths are
  relative to the list's folder).

Image files in class folders are found as batch jobs find them in folders
(:func:`~fastvit.data.image_files_under`): by extension, recursively, hidden files and folders left out.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..data import image_files_under, load_image
from ..errors import FastViTError, ImageLoadError
from ..files import replaced_atomically

__all__ = [
    "ENLARGEMENT_LIMIT",
    "Split",
    "TrainingData",
    "check_data_folder",
    "check_images",
    "find_training_data",
    "find_validation_data",
    "write_list",
]

ENLARGEMENT_LIMIT = 8
"""An image is too small to crop when even the whole of it would have to be enlarged more than
this many times to fill the input size (a side under 1/8 of the input side: 32 px at 256 x 256,
8 px at 64 x 64). Such an image, crop after crop, teaches the model interpolation blur."""
_HEADER_THREADS = 8  # reading image headers waits on storage more than on the CPU


@dataclass(frozen=True)
class Split:
    """Image paths and their class indices."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def without(self, skipped: Sequence[str]) -> Split:
        """This split less the given paths."""
        drop = set(skipped)
        kept = [(path, label) for path, label in zip(self.paths, self.labels) if path not in drop]
        return Split(tuple(path for path, _ in kept), tuple(label for _, label in kept))


@dataclass(frozen=True)
class TrainingData:
    """What a run learns from: the class names (index order), the two splits, and the files left
    out because they cannot be opened (path -> reason)."""

    classes: tuple[str, ...]
    train: Split
    val: Split
    skipped: dict[str, str]


# ----------------------------------------------------------------------------------------------
# Finding the images
# ----------------------------------------------------------------------------------------------


def find_training_data(
    data: str | None,
    *,
    val_split: float | None = None,
    train_list: str | None = None,
    val_list: str | None = None,
    seed: int = 0,
    input_size: tuple[int, int] = (256, 256),
    strict: bool = False,
) -> TrainingData:
    """The labelled images of a run, checked: see the module docstring for the layouts.

    Every image's header is read first: files that cannot be opened are skipped (``strict``:
    raise), and an image too small to crop (:data:`ENLARGEMENT_LIMIT`) stops the run.

    Raises:
        FastViTError: a missing folder or list, no images, a single class, a validation class with
            no training images, an image too small to crop.
        ImageLoadError: with ``strict``, the first file that cannot be opened.
    """
    if train_list:
        train_rows = _read_list(train_list)
        classes = tuple(sorted({label for _, label in train_rows}))
        train = _rows_split(train_rows, classes, train_list)
        val = _rows_split(_read_list(val_list), classes, val_list) if val_list else None
        where = train_list
    else:
        if data is None:
            raise FastViTError("give the data folder, or --train-list LIST")
        root = check_data_folder(data)
        if val_split is None:
            train_by_class = class_folders(root / "train", hint=f"{root} has no train/ folder; give --val-split "
                                           "FRACTION to hold out part of its class folders for validation")
            classes = tuple(train_by_class)
            train = _folders_split(train_by_class, classes)
            val = None if val_list else _folders_split(
                class_folders(root / "val", hint=f"{root} has train/ but no val/: add one, or give --val-split"),
                classes, root / "val",
            )
        else:
            by_class = class_folders(root / "train" if (root / "train").is_dir() else root)
            classes = tuple(by_class)
            train, val = _stratified_split(by_class, classes, val_split, seed)
        if val_list:
            val = _rows_split(_read_list(val_list), classes, val_list)
        where = str(root)
    _check_classes(classes, where)
    if val is None:  # a --train-list without its --val-list (--val-split splits folders)
        raise FastViTError("no validation images: give --val-list LIST with --train-list, or --val-split FRACTION "
                           "with a folder")
    if not len(val):
        raise FastViTError(f"the validation split of {where} is empty: give more images or a larger --val-split")
    skipped = check_images([*train.paths, *val.paths], input_size, strict)
    train, val = train.without(skipped), val.without(skipped)
    unreadable = [name for label, name in enumerate(classes) if label not in set(train.labels)]
    if unreadable:
        raise FastViTError(f"class {unreadable[0]!r} of {where} has no readable training image "
                           f"({len(skipped)} unreadable files; --strict names the first)")
    if not len(val):
        raise FastViTError(f"none of the validation images of {where} can be read ({len(skipped)} unreadable files; "
                           "--strict names the first)")
    return TrainingData(classes, train, val, skipped)


def find_validation_data(source: str) -> tuple[tuple[str, ...], Split]:
    """The classes (sorted) and labelled images of ``source``: the class folders of a folder (or
    of its ``val/``), or the rows of a CSV list of ``path,label`` (a run's ``val.csv``)."""
    root = Path(source)
    if root.is_file():
        rows = _read_list(source)
        classes = tuple(sorted({label for _, label in rows}))
        return classes, _rows_split(rows, classes, source)
    by_class = class_folders(root / "val" if (root / "val").is_dir() else root)
    classes = tuple(by_class)
    return classes, _folders_split(by_class, classes)


def write_list(path: Path, split: Split, classes: Sequence[str]) -> None:
    """A CSV list of ``split`` (absolute paths, class names) that :func:`find_validation_data` reads."""
    with replaced_atomically(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        writer.writerows((os.path.abspath(path), classes[label]) for path, label in zip(split.paths, split.labels))


def check_data_folder(data: str | os.PathLike[str]) -> Path:
    """The data folder ``data``, which must exist."""
    root = Path(data)
    if not root.is_dir():
        raise FastViTError(f"no such folder: {root}")
    return root


def class_folders(root: Path, hint: str | None = None) -> dict[str, list[str]]:
    """Class name -> its image paths (sorted), for each non-hidden subfolder of ``root`` (sorted)."""
    if not root.is_dir():
        raise FastViTError(hint or f"no such folder: {root}")
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    by_class = {name: image_files_under(root / name) for name in names}
    found = {name: paths for name, paths in by_class.items() if paths}
    if not found:
        raise FastViTError(f"no images in {root}: expected {root}/<class name>/<images>")
    return found


def _folders_split(by_class: dict[str, list[str]], classes: Sequence[str], where: Path | None = None) -> Split:
    unknown = [name for name in by_class if name not in classes]
    if unknown:
        raise FastViTError(
            f"{where}/{unknown[0]}: class {unknown[0]!r} has no training images "
            f"(the classes are the train folders: {_names(classes)})"
        )
    pairs = [(path, classes.index(name)) for name, paths in by_class.items() for path in paths]
    return Split(tuple(path for path, _ in pairs), tuple(label for _, label in pairs))


def _stratified_split(
    by_class: dict[str, list[str]], classes: Sequence[str], fraction: float, seed: int
) -> tuple[Split, Split]:
    """Hold out ``round(fraction * n)`` images of each class (n its images), drawn with ``seed``;
    every class keeps at least one training image."""
    if not 0 < fraction < 1:
        raise FastViTError(f"--val-split must be between 0 and 1, got {fraction}")
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        paths = list(by_class[name])
        random.Random(f"{seed}/{name}").shuffle(paths)
        held_out = min(round(fraction * len(paths)), len(paths) - 1)
        val += [(path, label) for path in sorted(paths[:held_out])]
        train += [(path, label) for path in sorted(paths[held_out:])]
    return _pairs_split(train), _pairs_split(val)


def _pairs_split(pairs: list[tuple[str, int]]) -> Split:
    return Split(tuple(path for path, _ in pairs), tuple(label for _, label in pairs))


def _read_list(list_path: str) -> list[tuple[str, str]]:
    """(path, label) rows of a CSV list; relative paths are taken from the list's folder."""
    try:
        with open(list_path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except OSError as error:
        raise FastViTError(f"cannot read the list {list_path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise FastViTError(f"{list_path} is not a CSV list of path,label: {error}") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["path", "label"]:
        rows = rows[1:]
    base = Path(list_path).parent
    pairs = []
    for number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise FastViTError(f"{list_path}, row {number}: expected path,label, got {','.join(row)!r}")
        pairs.append((str(base / row[0].strip()), row[1].strip()))
    if not pairs:
        raise FastViTError(f"no images in {list_path}")
    return pairs


def _rows_split(rows: list[tuple[str, str]], classes: Sequence[str], where: str) -> Split:
    index = {name: label for label, name in enumerate(classes)}
    unknown = [label for _, label in rows if label not in index]
    if unknown:
        raise FastViTError(
            f"{where}: class {unknown[0]!r} has no training images (the training classes: {_names(classes)})"
        )
    return Split(tuple(path for path, _ in rows), tuple(index[label] for _, label in rows))


def _check_classes(classes: Sequence[str], where: str) -> None:
    if len(classes) < 2:
        raise FastViTError(
            f"{where} has one class ({classes[0]!r}): a classifier needs at least two classes of training images"
        )


def _names(classes: Sequence[str], shown: int = 6) -> str:
    more = f" and {len(classes) - shown} more" if len(classes) > shown else ""
    return ", ".join(classes[:shown]) + more


def check_images(paths: Sequence[str], input_size: tuple[int, int], strict: bool) -> dict[str, str]:
    """Read every image's header: return the files that cannot be opened (path -> reason).

    Raises:
        FastViTError: images too small to crop (:data:`ENLARGEMENT_LIMIT`).
        ImageLoadError: with ``strict``, the first file that cannot be opened.
    """
    with ThreadPoolExecutor(_HEADER_THREADS) as pool:
        sizes = list(pool.map(_image_size, paths))
    skipped = {}
    for path, size in zip(paths, sizes):
        if isinstance(size, ImageLoadError):
            if strict:
                raise size
            skipped[path] = size.reason
    minimum = tuple(math.ceil(side / ENLARGEMENT_LIMIT) for side in input_size)
    small = [(path, size) for path, size in zip(paths, sizes)
             if isinstance(size, tuple) and (size[1] < minimum[0] or size[0] < minimum[1])]
    if small:
        path, (width, height) = small[0]
        raise FastViTError(
            f"{path} is too small to crop ({width}x{height} pixels; at input size {input_size[0]}x{input_size[1]} "
            f"an image needs at least {minimum[1]}x{minimum[0]}, as it would be enlarged more than "
            f"{ENLARGEMENT_LIMIT} times){f' and so are {len(small) - 1} more' if len(small) > 1 else ''}: "
            "remove such images or train at a smaller --input-size"
        )
    return skipped


def _image_size(path: str) -> tuple[int, int] | ImageLoadError:
    """(width, height) from the file's header, or why it cannot be read (found by decoding it)."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # any opener failure: decoding says why, in the loader's words
        try:
            return load_image(path).size
        except ImageLoadError as error:
            return error
