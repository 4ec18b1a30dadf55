"""Batch jobs over image collections: classify, embed or extract features of folders, globs and
lists of files at full speed; resumable, tolerant of bad files, sharded across processes.

A job is its inputs (:func:`collect_inputs`), its :class:`JobSettings` (model, weights, data
config, decode mode, output kind, precision, backend, chunk size: what decides the results) and a
``forward`` callable (:func:`make_forward`; any ``Tensor -> Tensor`` fits, such as a faster predictor).
:class:`BatchJob` runs it:

* inputs are decoded and transformed in DataLoader worker processes, in planned batches that
  never cross a chunk boundary, pinned and prefetched while the model runs;
* a file that cannot be read (:func:`fastvit.data.load_image` says why) is recorded with its
  reason and skipped, or, with ``strict``, stops the run;
* each finished chunk is committed to disk by a background thread (:mod:`fastvit.jobs.store`),
  so a killed run resumes where it stopped, to the outputs an uninterrupted run gives;
* under ``torchrun`` every rank computes its share of the chunks still to do, and rank 0 merges
  all of them into the output files in input order.

Several GPUs: one process per GPU, each on GPU ``LOCAL_RANK`` with ``cpus / local processes``
decoding workers; the processes only exchange small objects (over gloo, no NCCL needed)::

    torchrun --nproc-per-node 8 -m fastvit embed /data/photos --out /data/emb.npy --batch-size 256

Several machines: the same command on each, with torchrun's rendezvous and an ``--out`` on a
filesystem they all share (rank 0 reads every rank's chunks from it)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 --rdzv-id photos \\
        -m fastvit embed /shared/photos --out /shared/emb.npy

Chunks are numbered over the whole input list, so a job stopped with one number of processes
resumes with any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import DECODE_MODES, create_decoder
from ..errors import FastViTError, ImageLoadError
from ..runtime.devices import Ranks, decided_by_main, process_group
from ..runtime.predictor import Predictor
from .inputs import collect_inputs
from .outputs import Forward, OutputKind
from .pipeline import ImageFiles, LoadedBatch, chunk_result, collate, init_worker, split_evenly
from .store import ChunkResult, ChunkStore, JobFiles, read_record, write_record
from .writers import ResultsWriter, write_errors

__all__ = ["BatchJob", "InMemoryResult", "JobReport", "JobSettings", "PipelineOptions", "RunStats"]

RESUME_FORMAT = 2
"""Version of the on-disk job state; part of a job's identity."""


@dataclass(frozen=True)
class JobSettings:
    """Everything that decides a job's results. A run resumes only work done with equal settings
    on the same input list."""

    model: str  # the name it was created from
    checkpoint: str | None  # local weights file, identified by its SHA-256
    data_config: dict[str, Any]  # resolve_data_config(...): the transform
    output: OutputKind
    precision: str = "fp32"
    backend: str = "torch"
    chunk_size: int = 1024  # inputs per committed chunk
    # images with more pixels are skipped as decompression bombs (None: no limit); Pillow's limit by default
    max_image_pixels: int | None = field(default_factory=lambda: Image.MAX_IMAGE_PIXELS)
    decode: str = "exact"  # how files become the transform's pixels: "exact" (timm's) or "fast"

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {self.decode!r}; expected one of {', '.join(DECODE_MODES)}")

    def chunk_count(self, input_count: int) -> int:
        return -(-input_count // self.chunk_size)

    def batch_count(self, input_count: int, batch_size: int) -> int:
        """Batches of the whole job (a batch never spans two chunks)."""
        whole_chunks, last_chunk = divmod(input_count, self.chunk_size)
        return whole_chunks * -(-self.chunk_size // batch_size) + -(-last_chunk // batch_size)

    def chunk_inputs(self, chunk: int, input_count: int) -> range:
        """The input positions of chunk ``chunk``."""
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, input_count))

    def identity(self, paths: Sequence[str], batch_size: int, processes: int) -> dict[str, Any]:
        """A JSON-compatible description of the job on ``paths``, run in batches of ``batch_size`` by
        ``processes`` processes; equal exactly when the results are. The batch size and the process
        count are part of it: they change which shapes the model runs at (and whether it compiles
        them), and so the last bits of the results."""
        listing = hashlib.sha256()
        for path in paths:
            listing.update(os.fsencode(path) + b"\0")
        identity = {
            "format": RESUME_FORMAT,
            "model": self.model,
            "checkpoint_sha256": _file_sha256(self.checkpoint) if self.checkpoint else None,
            "data_config": self.data_config,
            "decode": self.decode,
            "output": {"kind": type(self.output).__name__, **asdict(self.output)},
            "precision": self.precision,
            "backend": self.backend,
            "chunk_size": self.chunk_size,
            "batch_size": batch_size,
            "processes": processes,
            "max_image_pixels": self.max_image_pixels,
            "inputs": {"count": len(paths), "sha256": listing.hexdigest()},
        }
        return json.loads(json.dumps(identity))


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(partial(file.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PlannedBatch(NamedTuple):
    chunk: int
    positions: range
    closes_chunk: bool


def plan_batches(
    chunks: Sequence[int], settings: JobSettings, input_count: int, batch_size: int
) -> list[PlannedBatch]:
    """The batches of the given chunks, in order; a batch never spans two chunks, so a chunk's
    batches (and hence its results, bit for bit) do not depend on what else the run computes."""
    plan = []
    for chunk in chunks:
        chunk_inputs = settings.chunk_inputs(chunk, input_count)
        for start in range(0, len(chunk_inputs), batch_size):
            closes_chunk = start + batch_size >= len(chunk_inputs)
            plan.append(PlannedBatch(chunk, chunk_inputs[start : start + batch_size], closes_chunk))
    return plan


@dataclass(frozen=True)
class PipelineOptions:
    """How a job runs; of all this, only the batch size changes the results (in their last bits: it is
    part of the job's identity, see :meth:`JobSettings.identity`)."""

    batch_size: int = 32
    workers: int = 0  # decoding processes; 0 decodes in this process
    pin_memory: bool = False  # page-locked batches, for fast copies to a GPU
    prefetch_batches: int = 4  # per worker, in shares of a batch (each worker decodes a share of every batch)
    strict: bool = False  # the first bad file stops the run (ImageLoadError)
    progress: bool = False  # show a progress bar on stderr

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"need batch_size >= 1 and workers >= 0, got {self.batch_size} and {self.workers}")


@dataclass
class RunStats:
    """What one run of one process did."""

    images: int = 0  # inputs it computed
    skipped: int = 0  # inputs it found it could not read
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _combined(stats: RunStats, ranks: Ranks) -> RunStats:
    """The stats of all ranks together (images and skips summed, the slowest rank's time)."""
    if ranks.world_size == 1:
        return stats
    every = [RunStats()] * ranks.world_size
    dist.all_gather_object(every, stats)
    return RunStats(sum(s.images for s in every), sum(s.skipped for s in every), max(s.seconds for s in every))


# ----------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InMemoryResult:
    paths: list[str]
    chunks: list[ChunkResult]  # in input order
    stats: RunStats


@dataclass(frozen=True)
class JobReport:
    """The outcome of a job that wrote files (as rank 0 sees it)."""

    images: int  # rows in the output
    skipped: int  # inputs that could not be read, listed in the errors file
    resumed: int  # inputs done by earlier runs
    run: RunStats  # what this run did (all ranks together)
    files: tuple[Path, ...]  # the output files
    already_finished: bool  # an identical finished job was found: nothing was done


@dataclass(frozen=True)
class _Plan:
    paths: list[str]
    identity: dict[str, Any]
    pending: list[int]  # chunks still to compute
    finished: dict[str, Any] | None  # the record of an identical finished job


@dataclass
class BatchJob:
    """Run ``forward`` over many images with the given settings."""

    settings: JobSettings
    forward: Forward
    options: PipelineOptions = field(default_factory=PipelineOptions)

    def run_in_memory(self, paths: Sequence[str]) -> InMemoryResult:
        """Compute every input and return the results (nothing is written; one process only)."""
        chunks: list[ChunkResult] = []
        with self._progress_bar(len(paths)) as bar:
            stats = self._run_chunks(paths, range(self.settings.chunk_count(len(paths))), chunks.append, bar)
        return InMemoryResult(list(paths), chunks, stats)

    def run_to_files(
        self,
        sources: Sequence[str],
        writer: ResultsWriter,
        files: JobFiles,
        files_from: str | None = None,
        overwrite: bool = False,
        ranks: Ranks | None = None,
    ) -> JobReport | None:
        """Compute the inputs of ``sources`` (see :func:`collect_inputs`) that earlier runs of the
        same job did not, committing chunks to ``files.parts``; then write the outputs. Returns
        the report on rank 0, None on the other ranks.

        Every rank of a torchrun job calls this: rank 0 collects the inputs and opens the job,
        the ranks share the pending chunks round-robin, and rank 0 writes the outputs once all
        are committed (so with several machines, the outputs must be on a shared filesystem).
        ``overwrite`` discards the unfinished state of a job with other settings.
        """
        ranks = ranks or Ranks.from_env()
        with ChunkStore(files.parts) as store:
            with process_group(ranks):
                plan = decided_by_main(
                    ranks, partial(self._plan, sources, files_from, store, writer, files, overwrite, ranks.world_size)
                )
                mine = plan.pending[ranks.rank :: ranks.world_size]
                resumed = len(plan.paths) - self._input_count(plan.pending, len(plan.paths))
                initial = resumed if ranks.world_size == 1 else 0  # a rank's bar counts its share only
                total = initial + self._input_count(mine, len(plan.paths))
                with self._progress_bar(total, initial, enabled=ranks.is_main) as bar:
                    stats = self._run_chunks(plan.paths, mine, store.commit, bar, ranks.world_size)
                stats = _combined(stats, ranks)  # waits for every rank's chunks
            if not ranks.is_main:
                return None
            record = plan.finished or self._write_outputs(plan, store, writer, files)
        outputs = (*writer.files(), files.errors, files.record)
        return JobReport(record["images"], record["skipped"], resumed, stats, outputs, plan.finished is not None)

    # -- steps

    def _input_count(self, chunks: Sequence[int], input_count: int) -> int:
        return sum(len(self.settings.chunk_inputs(chunk, input_count)) for chunk in chunks)

    def _plan(
        self, sources: Sequence[str], files_from: str | None, store: ChunkStore, writer: ResultsWriter,
        files: JobFiles, overwrite: bool, processes: int,
    ) -> _Plan:
        paths = collect_inputs(sources, files_from)
        writer.check_inputs(paths)
        identity = self.settings.identity(paths, self.options.batch_size, processes)
        record = read_record(files.record)
        outputs_exist = all(path.exists() for path in (*writer.files(), files.errors))
        if not store.exists() and record and record["identity"] == identity and outputs_exist:
            return _Plan(paths, identity, [], record)
        committed = store.start(identity, overwrite)
        pending = [chunk for chunk in range(self.settings.chunk_count(len(paths))) if chunk not in committed]
        return _Plan(paths, identity, pending, None)

    def _write_outputs(self, plan: _Plan, store: ChunkStore, writer: ResultsWriter, files: JobFiles) -> dict[str, Any]:
        missing = set(range(self.settings.chunk_count(len(plan.paths)))) - store.committed()
        if missing:
            raise FastViTError(
                f"{len(missing)} chunks are missing from {store.directory} (with several machines, --out must be on a "
                "filesystem they all share); run the same command again to compute them"
            )
        writer.write(store, plan.paths)
        skipped = write_errors(files.errors, store, plan.paths)
        record = {"identity": plan.identity, "images": len(plan.paths) - skipped, "skipped": skipped}
        write_record(files.record, record)
        store.remove()
        return record

    def _progress_bar(self, total: int, initial: int = 0, enabled: bool = True) -> tqdm:
        return tqdm(
            total=total, initial=initial, unit="img", dynamic_ncols=True, smoothing=0.05, file=sys.stderr,
            disable=not (self.options.progress and enabled),
        )

    def _run_chunks(
        self, paths: Sequence[str], chunks: Sequence[int], commit: Callable[[ChunkResult], None], bar: tqdm,
        world_size: int = 1,
    ) -> RunStats:
        """Compute ``chunks`` of ``paths`` (this rank's share of ``world_size``), handing each finished
        chunk to ``commit`` on a background thread (one chunk in flight, so memory stays bounded)."""
        options = self.options
        plan = plan_batches(chunks, self.settings, len(paths), options.batch_size)
        # Worker processes decode ahead of the model; with a single batch there is nothing to overlap
        # and starting them only delays it (a cold `fastvit predict one.jpg`). Every worker decodes a
        # share of each batch, so the first one is ready after a share rather than after all of it.
        workers = options.workers if len(plan) > 1 else 0
        shares = [split_evenly(batch.positions, workers) for batch in plan]
        decoder = create_decoder(self.settings.data_config, self.settings.decode, self.settings.max_image_pixels or 0)
        loader = DataLoader(
            ImageFiles(paths, decoder),
            batch_sampler=[share for batch_shares in shares for share in batch_shares],
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=init_worker,
            prefetch_factor=options.prefetch_batches if workers else None,
        )
        stats = RunStats()
        started = time.perf_counter()
        finished_batches: list[tuple[LoadedBatch, dict[str, np.ndarray]]] = []
        with ThreadPoolExecutor(1, "fastvit-commit") as committer:
            in_flight: Future | None = None
            loaded = iter(loader)  # the decoding processes start, and decode ahead while the model compiles
            if isinstance(self.forward, Predictor):  # from the whole job, so that a resumed run decides the same
                job_batches = self.settings.batch_count(len(paths), options.batch_size) // world_size
                self.forward.expect(min(options.batch_size, self.settings.chunk_size), job_batches)
            for planned, batch_shares in zip(plan, shares):
                batch = LoadedBatch.joined([next(loaded) for _ in batch_shares])
                if options.pin_memory:
                    batch = batch.pin_memory()
                if batch.failures and options.strict:
                    position, reason = batch.failures[0]
                    raise ImageLoadError(paths[position], f"{reason} (--strict stops at the first bad file)")
                rows = {}
                if batch.positions:
                    rows = self.settings.output.to_arrays(self.forward(decoder.to_float(batch.images)))
                finished_batches.append((batch, rows))
                stats.images += len(batch.positions)
                stats.skipped += len(batch.failures)
                bar.update(len(planned.positions))
                if batch.failures:
                    bar.set_postfix(skipped=stats.skipped, refresh=False)
                if planned.closes_chunk:
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = committer.submit(commit, chunk_result(planned.chunk, finished_batches))
                    finished_batches = []
            if in_flight is not None:
                in_flight.result()
        stats.seconds = time.perf_counter() - started
        return stats
