"""Batches of a run's images, decoded and augmented in DataLoader workers, with each image's random
augmentation drawn from (seed, epoch, image): the batches do not depend on the number of workers, on
the processes, or on where a run was interrupted. An image that cannot be read becomes a recorded
reason, never an exception in a worker."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ImageLoadError
from ..runtime.devices import Ranks
from .datasets import Split

__all__ = ["Batch", "EpochOrder", "LabelledImages", "collate", "draw_seed", "make_loader"]


def draw_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (hashing: nearby parts give unrelated seeds)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochOrder(Sampler):
    """This rank's image order in each epoch, as ``(epoch, index)`` keys: a permutation drawn from
    (seed, epoch), or the given order, padded by wrapping round to a multiple of the ranks and
    dealt to them in turn. Call :meth:`set_epoch` before each epoch."""

    def __init__(self, size: int, seed: int, ranks: Ranks, shuffle: bool, pad: bool = True):
        self.size, self.seed, self.ranks, self.shuffle, self.pad = size, seed, ranks, shuffle, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(draw_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        if self.pad:
            order += order[: len(self) * self.ranks.world_size - len(order)]
        return iter([(self.epoch, index) for index in order[self.ranks.rank :: self.ranks.world_size]])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.ranks.world_size)
        return len(range(self.ranks.rank, self.size, self.ranks.world_size))


class _Sample(NamedTuple):
    index: int
    image: Tensor | None  # None: the file could not be read
    label: int
    failure: str | None


class LabelledImages(Dataset):
    """``(epoch, index)`` -> the decoded, transformed image and its label, or why it cannot be read
    (never raises for a bad file). With a ``generator`` (the one ``decoder``'s transform draws from),
    it is seeded from (seed, epoch, index) before each image."""

    def __init__(
        self,
        split: Split,
        decoder: Callable[[str], Tensor],
        generator: torch.Generator | None = None,
        seed: int = 0,
    ):
        self.split, self.decoder, self.generator, self.seed = split, decoder, generator, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> _Sample:
        epoch, index = key
        label = self.split.labels[index]
        if self.generator is not None:
            self.generator.manual_seed(draw_seed(self.seed, epoch, index))
        try:
            return _Sample(index, self.decoder(self.split.paths[index]), label, None)
        except ImageLoadError as error:
            return _Sample(index, None, label, error.reason)


@dataclass(frozen=True)
class Batch:
    """The images of a batch that could be read, their labels and indices, and the (index, reason)
    of those that could not."""

    images: Tensor | None
    labels: Tensor
    indices: list[int]
    failures: list[tuple[int, str]]


def collate(samples: list[_Sample]) -> Batch:
    loaded = [sample for sample in samples if sample.image is not None]
    return Batch(
        images=torch.stack([sample.image for sample in loaded]) if loaded else None,
        labels=torch.tensor([sample.label for sample in loaded], dtype=torch.int64),
        indices=[sample.index for sample in loaded],
        failures=[(sample.index, sample.failure) for sample in samples if sample.image is None],
    )


def make_loader(
    dataset: LabelledImages, order: EpochOrder, batch_size: int, workers: int, pin_memory: bool, drop_last: bool = False
) -> DataLoader:
    """Batches of ``dataset`` in ``order``, decoded by ``workers`` processes (0: in this one) that
    live as long as the loader. Its generator is fixed, so making an iterator draws nothing from
    torch's global generator (which a resumed run restores from ``last.pt``)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, drop_last=drop_last, persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0),
    )
