"""Batch jobs over image collections: classify, embed or extract features of folders, globs and
lists of files at full speed; resumable, tolerant of bad files, sharded across processes.

A job is its inputs (:func:`collect_inputs`), its :class:`JobSettings` (model, weights, data
config, output kind, precision, backend, chunk size: what decides the results) and a ``forward``
callable (:func:`make_forward`; any ``Tensor -> Tensor`` fits, such as a faster predictor).
:class:`BatchJob` runs it:

* inputs are decoded and transformed in DataLoader worker processes, in planned batches that
  never cross a chunk boundary, pinned and prefetched while the model runs;
* a file that cannot be read (:func:`fastvit.data.load_image` says why) is recorded with its
  reason and skipped, or, with ``strict``, stops the run;
* each finished chunk is committed to disk by a background thread (:mod:`fastvit.batch_store`),
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

import glob
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .batch_store import ChunkResult, ChunkStore, JobFiles, ResultsWriter, read_record, write_errors, write_record
from .data import create_transform, load_image, split_per_batch
from .errors import FastViTError, ImageLoadError
from .inference import BACKENDS, PRECISIONS, Predictor
from .reparam import reparameterize

__all__ = [
    "IMAGE_EXTENSIONS",
    "BatchJob",
    "Embedding",
    "FeatureMaps",
    "Forward",
    "InMemoryResult",
    "JobReport",
    "JobSettings",
    "OutputKind",
    "PipelineOptions",
    "Ranks",
    "RunStats",
    "TopK",
    "TorchForward",
    "collect_inputs",
    "default_device",
    "default_workers",
    "make_forward",
]

Forward = Callable[[Tensor], "Tensor | Sequence[Tensor]"]
"""A batch of preprocessed images (B, 3, H, W) on the CPU -> the model's output for it."""

RESUME_FORMAT = 1
"""Version of the on-disk job state; part of a job's identity."""

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


# ----------------------------------------------------------------------------------------------
# What a job computes
# ----------------------------------------------------------------------------------------------


class OutputKind(Protocol):
    """How a batch of model outputs becomes named arrays, one row per image."""

    def to_arrays(self, output: Tensor | Sequence[Tensor]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TopK:
    """A classifier's ``k`` most probable classes: ``indices`` (int64) and softmax ``probabilities``."""

    k: int = 5

    def to_arrays(self, logits: Tensor) -> dict[str, np.ndarray]:
        top = logits.float().softmax(dim=-1).topk(min(self.k, logits.shape[-1]))
        return {"indices": top.indices.cpu().numpy(), "probabilities": top.values.cpu().numpy()}


@dataclass(frozen=True)
class Embedding:
    """One vector per image, ``embedding`` (float32): the pooled pre-logits features of a model
    built with ``num_classes=0``, or with ``projected`` the output of a model that keeps its head
    (for a MobileCLIP tower, the CLIP image embedding). ``normalize`` scales each to unit length."""

    projected: bool = False
    normalize: bool = False

    def to_arrays(self, embeddings: Tensor) -> dict[str, np.ndarray]:
        embeddings = embeddings.float()
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        return {"embedding": embeddings.cpu().numpy()}


@dataclass(frozen=True)
class FeatureMaps:
    """The stage outputs of a ``features_only`` model: ``stage<i>`` (float32, C x H x W per image)."""

    out_indices: tuple[int, ...]

    def to_arrays(self, maps: Sequence[Tensor]) -> dict[str, np.ndarray]:
        return {f"stage{index}": m.float().cpu().numpy() for index, m in zip(self.out_indices, maps)}


class TorchForward:
    """The eval model, reparameterized (fused) in place and moved to ``device``, called under
    ``torch.inference_mode`` (in bfloat16 autocast for ``precision='bf16'``)."""

    def __init__(self, model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = reparameterize(model, inplace=True).eval().to(self.device)
        self.autocast = precision == "bf16"

    def __call__(self, images: Tensor) -> Tensor | Sequence[Tensor]:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            return self.model(images.to(self.device, non_blocking=True))


def make_forward(
    model: nn.Module, precision: str = "fp32", backend: str = "torch", device: str | torch.device = "cpu"
) -> Forward:
    """The model call of a batch job, for the ``--precision`` / ``--backend`` / ``--device`` flags:
    the fast :class:`~fastvit.inference.Predictor` on the CPU or with ONNX Runtime, else the fused
    model on the device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if torch.device(device).type == "cpu" or backend == "onnxruntime":
        return Predictor(model, precision=precision, backend=backend, inplace=True)
    return TorchForward(model, precision, device)


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

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")

    def chunk_count(self, input_count: int) -> int:
        return -(-input_count // self.chunk_size)

    def chunk_inputs(self, chunk: int, input_count: int) -> range:
        """The input positions of chunk ``chunk``."""
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, input_count))

    def identity(self, paths: Sequence[str]) -> dict[str, Any]:
        """A JSON-compatible description of the job on ``paths``; equal exactly when the results are."""
        listing = hashlib.sha256()
        for path in paths:
            listing.update(os.fsencode(path) + b"\0")
        identity = {
            "format": RESUME_FORMAT,
            "model": self.model,
            "checkpoint_sha256": _file_sha256(self.checkpoint) if self.checkpoint else None,
            "data_config": self.data_config,
            "output": {"kind": type(self.output).__name__, **asdict(self.output)},
            "precision": self.precision,
            "backend": self.backend,
            "chunk_size": self.chunk_size,
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


# ----------------------------------------------------------------------------------------------
# Input pipeline
# ----------------------------------------------------------------------------------------------


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


class _ImageFiles(Dataset):
    """Input position -> the transformed image, or the reason it cannot be read (never raises
    for a bad file, so a worker process never dies of one)."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], Tensor]):
        self.paths = _PathTable(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> _Sample:
        path = self.paths[position]
        try:
            image = load_image(path)
        except ImageLoadError as error:
            return _Sample(position, None, error.reason)
        return _Sample(position, self.transform(image), None)


@dataclass(frozen=True)
class _LoadedBatch:
    positions: list[int]  # the inputs that loaded
    images: Tensor | None  # their images (len(positions), 3, H, W), None if none loaded
    failures: list[tuple[int, str]]  # (position, reason) of those that did not

    def pin_memory(self) -> _LoadedBatch:  # called by DataLoader(pin_memory=True)
        return self if self.images is None else replace(self, images=self.images.pin_memory())


def _collate(samples: list[_Sample]) -> _LoadedBatch:
    loaded = [sample for sample in samples if sample.image is not None]
    return _LoadedBatch(
        positions=[sample.position for sample in loaded],
        images=torch.stack([sample.image for sample in loaded]) if loaded else None,
        failures=[(sample.position, sample.failure) for sample in samples if sample.image is None],
    )


def _init_worker(max_image_pixels: int | None, worker_id: int) -> None:
    Image.MAX_IMAGE_PIXELS = max_image_pixels


@contextmanager
def _pixel_limit(max_image_pixels: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb limit (a global) set for the inputs decoded in this process."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_image_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


class _PlannedBatch(NamedTuple):
    chunk: int
    positions: range
    closes_chunk: bool


def _plan_batches(
    chunks: Sequence[int], settings: JobSettings, input_count: int, batch_size: int
) -> list[_PlannedBatch]:
    """The batches of the given chunks, in order; a batch never spans two chunks, so a chunk's
    batches (and hence its results, bit for bit) do not depend on what else the run computes."""
    plan = []
    for chunk in chunks:
        chunk_inputs = settings.chunk_inputs(chunk, input_count)
        for start in range(0, len(chunk_inputs), batch_size):
            closes_chunk = start + batch_size >= len(chunk_inputs)
            plan.append(_PlannedBatch(chunk, chunk_inputs[start : start + batch_size], closes_chunk))
    return plan


def _chunk_result(chunk: int, batches: list[tuple[_LoadedBatch, dict[str, np.ndarray]]]) -> ChunkResult:
    with_rows = [rows for batch, rows in batches if batch.positions]
    names = with_rows[0] if with_rows else ()
    return ChunkResult(
        index=chunk,
        positions=np.array([p for batch, _ in batches for p in batch.positions], dtype=np.int64),
        arrays={name: np.concatenate([rows[name] for rows in with_rows]) for name in names},
        failed_positions=np.array([p for batch, _ in batches for p, _ in batch.failures], dtype=np.int64),
        failed_reasons=[reason for batch, _ in batches for _, reason in batch.failures],
    )


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
class PipelineOptions:
    """How a job runs; none of it changes the results."""

    batch_size: int = 32
    workers: int = 0  # decoding processes; 0 decodes in this process
    pin_memory: bool = False  # page-locked batches, for fast copies to a GPU
    prefetch_batches: int = 4  # per worker
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


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------


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
def _process_group(ranks: Ranks) -> Iterator[None]:
    """torch.distributed over gloo among the job's processes (objects are all they exchange). The
    timeout is long: a rank may wait for the others' last chunks or for rank 0's folder walk."""
    if ranks.world_size == 1:
        yield
        return
    dist.init_process_group("gloo", timeout=timedelta(hours=12))
    try:
        yield
    finally:
        dist.destroy_process_group()


T = TypeVar("T")


def _decided_by_main(ranks: Ranks, decide: Callable[[], T]) -> T:
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
        store = ChunkStore(files.parts)
        with _process_group(ranks):
            plan = _decided_by_main(ranks, partial(self._plan, sources, files_from, store, writer, files, overwrite))
            mine = plan.pending[ranks.rank :: ranks.world_size]
            resumed = len(plan.paths) - self._input_count(plan.pending, len(plan.paths))
            initial = resumed if ranks.world_size == 1 else 0  # a rank's bar counts its share only
            total = initial + self._input_count(mine, len(plan.paths))
            with self._progress_bar(total, initial, enabled=ranks.is_main) as bar:
                stats = self._run_chunks(plan.paths, mine, store.commit, bar)
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
        files: JobFiles, overwrite: bool,
    ) -> _Plan:
        paths = collect_inputs(sources, files_from)
        identity = self.settings.identity(paths)
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
        self, paths: Sequence[str], chunks: Sequence[int], commit: Callable[[ChunkResult], None], bar: tqdm
    ) -> RunStats:
        """Compute ``chunks`` of ``paths``, handing each finished chunk to ``commit`` on a
        background thread (one chunk in flight, so memory stays bounded)."""
        options = self.options
        plan = _plan_batches(chunks, self.settings, len(paths), options.batch_size)
        workers = min(options.workers, len(plan))
        per_image, per_batch = split_per_batch(create_transform(**self.settings.data_config))
        loader = DataLoader(
            _ImageFiles(paths, per_image),
            batch_sampler=[batch.positions for batch in plan],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=options.pin_memory,
            worker_init_fn=partial(_init_worker, self.settings.max_image_pixels),
            prefetch_factor=options.prefetch_batches if workers else None,
        )
        stats = RunStats()
        started = time.perf_counter()
        finished_batches: list[tuple[_LoadedBatch, dict[str, np.ndarray]]] = []
        with _pixel_limit(self.settings.max_image_pixels), ThreadPoolExecutor(1, "fastvit-commit") as committer:
            in_flight: Future | None = None
            for planned, batch in zip(plan, loader):
                if batch.failures and options.strict:
                    position, reason = batch.failures[0]
                    raise ImageLoadError(paths[position], f"{reason} (--strict stops at the first bad file)")
                rows = self.settings.output.to_arrays(self.forward(per_batch(batch.images))) if batch.positions else {}
                finished_batches.append((batch, rows))
                stats.images += len(batch.positions)
                stats.skipped += len(batch.failures)
                bar.update(len(planned.positions))
                if batch.failures:
                    bar.set_postfix(skipped=stats.skipped, refresh=False)
                if planned.closes_chunk:
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = committer.submit(commit, _chunk_result(planned.chunk, finished_batches))
                    finished_batches = []
            if in_flight is not None:
                in_flight.result()
        stats.seconds = time.perf_counter() - started
        return stats
