"""Where work runs: the device of this process, decoding workers per process, and this process's place
among the processes of a ``torchrun`` launch (ranks, the process group, decisions made by rank 0)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import FastViTError

__all__ = ["Ranks", "decided_by_main", "default_device", "default_workers", "process_group"]


def default_workers(local_processes: int = 1) -> int:
    """Decoding processes per job process: the CPUs this process may use, shared by the job
    processes on this machine, at most 16."""
    return max(1, min(16, len(os.sched_getaffinity(0)) // local_processes))


def default_device(local_rank: int = 0) -> torch.device:
    """The CUDA GPU of this local rank if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a job (torchrun's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        value = {name: int(os.environ.get(name, default)) for name, default in
                 (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1))}
        return cls(value["RANK"], value["WORLD_SIZE"], value["LOCAL_RANK"], value["LOCAL_WORLD_SIZE"])

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextmanager
def process_group(ranks: Ranks, backend: str = "gloo") -> Iterator[None]:
    """torch.distributed over gloo among the job's processes (objects are all they exchange). The
    timeout is long: a rank may wait for the others' last chunks or for rank 0's folder walk."""
    if ranks.world_size == 1:
        yield
        return
    dist.init_process_group(backend, timeout=timedelta(hours=12))
    try:
        yield
    finally:
        dist.destroy_process_group()


T = TypeVar("T")


def decided_by_main(ranks: Ranks, decide: Callable[[], T]) -> T:
    """``decide()`` run by rank 0, its result (or FastViTError) shared with every rank."""
    if ranks.world_size == 1:
        return decide()
    outcome: Any = None
    if ranks.is_main:
        try:
            outcome = decide()
        except FastViTError as error:
            outcome = error
    shared = [outcome]
    dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], FastViTError):
        raise shared[0]
    return shared[0]
