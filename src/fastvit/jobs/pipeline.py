"""The input pipeline of a job: images decoded and transformed in DataLoader worker processes, in planned
batches that never cross a chunk boundary; a file that cannot be read becomes a recorded reason, never
an exception in a worker."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data import ImageDecoder, stack_images
from ..errors import ImageLoadError
from .store import ChunkResult

__all__ = ["WORKER_NICENESS", "ImageFiles", "LoadedBatch", "chunk_result", "collate", "hush_resource_sharer",
           "init_worker", "split_evenly"]


class _PathTable:
    """Paths packed into two NumPy arrays. DataLoader workers share it as the parent built it,
    where a list of millions of Python strings would be copied into each worker page by page
    (reading a string touches its reference count)."""

    def __init__(self, paths: Sequence[str]):
        encoded = [os.fsencode(path) for path in paths]
        self._offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        return os.fsdecode(self._bytes[self._offsets[index] : self._offsets[index + 1]].tobytes())


class _Sample(NamedTuple):
    position: int
    image: Tensor | None  # None when the file could not be read
    failure: str | None  # why not


class ImageFiles(Dataset):
    """Input position -> the decoded per-image tensor, or the reason it cannot be read (never
    raises for a bad file, so a worker process never dies of one)."""

    def __init__(self, paths: Sequence[str], decoder: ImageDecoder):
        self.paths = _PathTable(paths)
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> _Sample:
        try:
            return _Sample(position, self.decoder(self.paths[position]), None)
        except ImageLoadError as error:
            return _Sample(position, None, error.reason)


@dataclass(frozen=True)
class LoadedBatch:
    positions: list[int]  # the inputs that loaded
    images: Tensor | None  # their images (len(positions), 3, H, W), None if none loaded
    failures: list[tuple[int, str]]  # (position, reason) of those that did not

    def pin_memory(self) -> LoadedBatch:
        return self if self.images is None else replace(self, images=self.images.pin_memory())

    @classmethod
    def joined(cls, parts: Sequence[LoadedBatch]) -> LoadedBatch:
        """One batch of the parts' inputs, in order."""
        images = [part.images for part in parts if part.images is not None]
        return cls(
            positions=[position for part in parts for position in part.positions],
            images=None if not images else images[0] if len(images) == 1 else torch.cat(images),
            failures=[failure for part in parts for failure in part.failures],
        )


def split_evenly(positions: Sequence[int], parts: int) -> list[list[int]]:
    """``positions`` in order, cut into ``parts`` runs of nearly equal length (fewer if there are
    fewer positions, one if there are none)."""
    return [part.tolist() for part in np.array_split(np.asarray(positions, dtype=np.int64),
                                                     max(1, min(parts, len(positions))))]


def collate(samples: list[_Sample]) -> LoadedBatch:
    loaded = [sample for sample in samples if sample.image is not None]
    return LoadedBatch(
        positions=[sample.position for sample in loaded],
        images=stack_images([sample.image for sample in loaded]) if loaded else None,
        failures=[(sample.position, sample.failure) for sample in samples if sample.image is None],
    )


WORKER_NICENESS = 10
"""Decoding processes run at a lower CPU priority than the model. The model splits each batch
between its threads and waits for the slowest, so a decoder taking a core from one of them idles
the other; at lower priority decoders mostly use the cores the model leaves, and all of them while
it waits for images. Not the lowest (19): next to other busy processes, decoders at 19 starve
(measured with two CPU-bound neighbours on 2 cores: 1/7 of the speed at 19, 4/5 at 10)."""


def init_worker(worker_id: int) -> None:
    if hasattr(os, "nice"):  # not on Windows
        os.nice(WORKER_NICENESS)
    hush_resource_sharer()


def hush_resource_sharer() -> None:
    """Keep off the terminal what multiprocessing's resource sharer reports: the thread through which
    a decoding worker hands its batches' shared memory to the job. Its connections break when the
    job stops mid-transfer (Ctrl-C, SIGTERM), which is no news; a real failure shows in the job,
    where the batch was awaited."""
    report = sys.excepthook

    def quiet(kind, value, trace):
        if not any(frame.f_code.co_filename.endswith("resource_sharer.py") for frame, _ in traceback.walk_tb(trace)):
            report(kind, value, trace)

    sys.excepthook = quiet


def chunk_result(chunk: int, batches: list[tuple[LoadedBatch, dict[str, np.ndarray]]]) -> ChunkResult:
    with_rows = [rows for batch, rows in batches if batch.positions]
    names = with_rows[0] if with_rows else ()
    return ChunkResult(
        index=chunk,
        positions=np.array([p for batch, _ in batches for p in batch.positions], dtype=np.int64),
        arrays={name: np.concatenate([rows[name] for rows in with_rows]) for name in names},
        failed_positions=np.array([p for batch, _ in batches for p, _ in batch.failures], dtype=np.int64),
        failed_reasons=[reason for batch, _ in batches for _, reason in batch.failures],
    )
