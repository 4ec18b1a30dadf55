"""On-disk state of a batch job: committed chunks, resuming, and the final output files.

A job's inputs are cut into chunks of ``chunk_size`` consecutive inputs; chunk ``c`` holds the
results of inputs ``[c * chunk_size, (c + 1) * chunk_size)``. For ``--out emb.npy`` the files are::

    emb.parts/                 work in progress, removed once the outputs are written
        job.json               the job's identity: model, weights, transform, output kind, inputs...
        chunk-00000012.npz     one committed chunk (arrays below)
    emb.npy                    the results (here with emb.paths.csv, the path of each row)
    emb.errors.csv             path, reason of every input that could not be read
    emb.job.json               identity and counts of the finished job

A directory output (``--out maps/``) holds the same names inside it: ``maps/parts/``,
``maps/errors.csv``, ``maps/job.json``.

Every file is written to a temporary name beside its final one, flushed, fsynced, renamed over
the final name, and the directory is fsynced: a file is on disk whole or not at all, whenever the
process is killed. A chunk counts as done exactly when its file exists, so a rerun recomputes
only the chunks that were in flight (the one being computed and, for the few milliseconds of its
write, the one before it) and never writes a row twice. A run resumes only a ``parts`` directory
whose ``job.json`` matches its own identity; a finished job's record makes a rerun a no-op.

A chunk file is an uncompressed ``.npz`` with ``positions`` (int64, the inputs that loaded, in
order), one array per output (``embedding``, ``indices`` and ``probabilities``, ``stage0``...;
row ``i`` belongs to ``positions[i]``; absent when no input of the chunk loaded),
``failed_positions`` (int64) and ``failed_reasons`` (str) for the inputs that did not load.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from .errors import FastViTError

__all__ = [
    "ChunkResult",
    "ChunkStore",
    "EmbeddingsParquet",
    "JobFiles",
    "NpyArrays",
    "PredictionsCsv",
    "PredictionsJsonl",
    "PredictionsParquet",
    "ResultsWriter",
    "read_record",
    "replaced_atomically",
    "sidecar",
    "write_errors",
    "write_record",
]

_JOB_FILE = "job.json"
_CHUNK_NAME = re.compile(r"chunk-(\d{8})\.npz")
_META_ARRAYS = ("positions", "failed_positions", "failed_reasons")


# ----------------------------------------------------------------------------------------------
# Crash-safe writing
# ----------------------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to. When the block ends the file is
    synced to disk and renamed over ``path``, and the directory synced: ``path`` is always either
    absent, its old contents or all of the new ones. If the block raises, ``path`` is untouched."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _open_text(path: Path) -> TextIO:
    """A text file for CSV/JSONL output; undecodable bytes of file names are written back as they were."""
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline="")


# ----------------------------------------------------------------------------------------------
# Chunks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkResult:
    """The results of one chunk of inputs."""

    index: int
    positions: np.ndarray  # input positions that loaded, ascending
    arrays: dict[str, np.ndarray]  # output name -> one row per position (empty when nothing loaded)
    failed_positions: np.ndarray  # input positions that could not be read, ascending
    failed_reasons: list[str]  # why, one per failed position

    def rows(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(input position, {output name: row}) for each input that loaded."""
        for row, position in enumerate(self.positions.tolist()):
            yield position, {name: values[row] for name, values in self.arrays.items()}

    def failures(self) -> Iterator[tuple[int, str]]:
        """(input position, reason) for each input that could not be read."""
        return zip(self.failed_positions.tolist(), self.failed_reasons)


class ChunkStore:
    """The committed chunks of one job, in the directory ``directory`` (see the module doc)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def exists(self) -> bool:
        return self.directory.exists()

    def start(self, identity: Mapping[str, Any], overwrite: bool = False) -> set[int]:
        """Open the store for a job with ``identity``: create it, or reopen the one a run of the
        same job left; return the indices of the chunks already committed.

        Raises:
            FastViTError: the directory holds an unfinished job with another identity (unless
                ``overwrite``, which discards that job), or is not a job directory at all.
        """
        identity = json.loads(json.dumps(identity))  # as it reads back from job.json
        job_file = self.directory / _JOB_FILE
        if job_file.exists():
            stored = json.loads(job_file.read_text(encoding="utf-8"))
            if stored == identity:
                return self.committed()
            if not overwrite:
                changed = sorted(key for key in identity.keys() | stored.keys() if identity.get(key) != stored.get(key))
                raise FastViTError(
                    f"{self.directory} holds an unfinished run with other settings (differing: {', '.join(changed)}); "
                    "rerun that command to finish it, or pass --overwrite to discard it and start over"
                )
            self.remove()
        elif self.exists() and any(p.name != f".{_JOB_FILE}.tmp" for p in self.directory.iterdir()):
            raise FastViTError(f"{self.directory} exists and is not a fastvit job directory; move it away")
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_json(job_file, identity)
        return set()

    def _chunk_path(self, index: int) -> Path:
        return self.directory / f"chunk-{index:08d}.npz"

    def commit(self, chunk: ChunkResult) -> None:
        """Write ``chunk`` durably; from then on it counts as done."""
        arrays = {
            "positions": chunk.positions,
            "failed_positions": chunk.failed_positions,
            "failed_reasons": np.array(chunk.failed_reasons, dtype=str),
            **chunk.arrays,
        }
        with replaced_atomically(self._chunk_path(chunk.index)) as temporary, open(temporary, "wb") as file:
            np.savez(file, **arrays)

    def committed(self) -> set[int]:
        return {int(match[1]) for p in self.directory.iterdir() if (match := _CHUNK_NAME.fullmatch(p.name))}

    def read(self, index: int) -> ChunkResult:
        with np.load(self._chunk_path(index), allow_pickle=False) as stored:
            return ChunkResult(
                index=index,
                positions=stored["positions"],
                arrays={name: stored[name] for name in stored.files if name not in _META_ARRAYS},
                failed_positions=stored["failed_positions"],
                failed_reasons=stored["failed_reasons"].tolist(),
            )

    def results(self) -> Iterator[ChunkResult]:
        """Every committed chunk, in input order."""
        for index in sorted(self.committed()):
            yield self.read(index)

    def row_count(self) -> int:
        """How many inputs loaded, over all committed chunks (reads only their positions)."""
        total = 0
        for index in self.committed():
            with np.load(self._chunk_path(index), allow_pickle=False) as stored:
                total += len(stored["positions"])
        return total

    def remove(self) -> None:
        """Delete the directory; ``job.json`` goes last, so an interrupted removal leaves a job
        that a rerun resumes (recomputing the chunks already deleted)."""
        for path in self.directory.iterdir():
            if path.name != _JOB_FILE:
                path.unlink()
        (self.directory / _JOB_FILE).unlink(missing_ok=True)
        self.directory.rmdir()


# ----------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------


def sidecar(out: Path, name: str) -> Path:
    """A file that goes with the output ``out``: ``emb.npy`` -> ``emb.<name>``; inside ``out`` if it is
    a directory output (``maps/`` -> ``maps/<name>``)."""
    return out / name if not out.suffix else out.with_name(f"{out.stem}.{name}")


@dataclass(frozen=True)
class JobFiles:
    """Where a job keeps its work in progress (``parts``), its errors file and its record."""

    parts: Path
    errors: Path
    record: Path

    @classmethod
    def for_output(cls, out: Path) -> JobFiles:
        return cls(sidecar(out, "parts"), sidecar(out, "errors.csv"), sidecar(out, "job.json"))


class ResultsWriter(Protocol):
    """Turns the committed chunks of a finished job into its output files."""

    def files(self) -> tuple[Path, ...]: ...

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None: ...


def _prediction_rows(
    store: ChunkStore, paths: Sequence[str], labels: Sequence[str]
) -> Iterator[tuple[str, list[int], list[str], list[float]]]:
    """(path, top-k class indices, their labels, their probabilities rounded to 6 decimals) per row."""
    for chunk in store.results():
        for position, row in chunk.rows():
            indices = row["indices"].tolist()
            probabilities = [round(p, 6) for p in row["probabilities"].tolist()]
            yield paths[position], indices, [labels[i] for i in indices], probabilities


@dataclass(frozen=True)
class PredictionsCsv:
    """One row per image: ``path, index_1, label_1, probability_1, ..., probability_k``."""

    path: Path
    labels: Sequence[str]
    top_k: int

    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None:
        ranks = range(1, min(self.top_k, len(self.labels)) + 1)
        with replaced_atomically(self.path) as temporary, _open_text(temporary) as file:
            writer = csv.writer(file)
            writer.writerow(["path", *(f"{field}_{r}" for r in ranks for field in ("index", "label", "probability"))])
            for path, indices, labels, probabilities in _prediction_rows(store, paths, self.labels):
                writer.writerow([path, *(value for top in zip(indices, labels, probabilities) for value in top)])


@dataclass(frozen=True)
class PredictionsJsonl:
    """One JSON object per line: ``{"path", "indices", "labels", "probabilities"}``."""

    path: Path
    labels: Sequence[str]

    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None:
        with replaced_atomically(self.path) as temporary, _open_text(temporary) as file:
            for path, indices, labels, probabilities in _prediction_rows(store, paths, self.labels):
                record = {"path": path, "indices": indices, "labels": labels, "probabilities": probabilities}
                file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _require_pyarrow() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise FastViTError("writing Parquet needs pyarrow: pip install 'fastvit[parquet]'")


def _write_parquet(path: Path, schema, tables: Iterator) -> None:
    import pyarrow.parquet as pq

    with replaced_atomically(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
        for table in tables:
            writer.write_table(table)


@dataclass(frozen=True)
class PredictionsParquet:
    """Columns ``path`` (string), ``indices`` (list<int64>), ``labels`` (list<string>),
    ``probabilities`` (list<float32>); one row group per chunk."""

    path: Path
    labels: Sequence[str]

    def __post_init__(self) -> None:
        _require_pyarrow()

    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None:
        import pyarrow as pa

        schema = pa.schema([
            ("path", pa.string()), ("indices", pa.list_(pa.int64())),
            ("labels", pa.list_(pa.string())), ("probabilities", pa.list_(pa.float32())),
        ])

        def tables():
            for chunk in store.results():
                indices = chunk.arrays.get("indices", np.zeros((0, 0), np.int64))
                yield pa.table({
                    "path": [paths[p] for p in chunk.positions.tolist()],
                    "indices": indices.tolist(),
                    "labels": [[self.labels[i] for i in row] for row in indices.tolist()],
                    "probabilities": chunk.arrays.get("probabilities", np.zeros((0, 0), np.float32)).tolist(),
                }, schema=schema)

        _write_parquet(self.path, schema, tables())


@dataclass(frozen=True)
class EmbeddingsParquet:
    """Columns ``path`` (string) and ``embedding`` (fixed_size_list<float32>[D]); one row group
    per chunk."""

    path: Path
    width: int

    def __post_init__(self) -> None:
        _require_pyarrow()

    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None:
        import pyarrow as pa

        schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), self.width))])

        def tables():
            for chunk in store.results():
                values = chunk.arrays.get("embedding", np.zeros((0, self.width), np.float32))
                embedding = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), self.width)
                chunk_paths = [paths[p] for p in chunk.positions.tolist()]
                yield pa.table({"path": chunk_paths, "embedding": embedding}, schema=schema)

        _write_parquet(self.path, schema, tables())


@dataclass(frozen=True)
class NpyArrays:
    """Each output array as one ``.npy`` matrix (row ``i`` for the ``i``-th image that loaded, in
    input order) and ``index``: a CSV with the ``path`` of each row."""

    arrays: Mapping[str, Path]  # output name -> .npy file
    index: Path

    def files(self) -> tuple[Path, ...]:
        return (*self.arrays.values(), self.index)

    def write(self, store: ChunkStore, paths: Sequence[str]) -> None:
        rows = store.row_count()
        with ExitStack() as files:
            temporaries = {name: files.enter_context(replaced_atomically(path)) for name, path in self.arrays.items()}
            index = csv.writer(files.enter_context(_open_text(files.enter_context(replaced_atomically(self.index)))))
            index.writerow(["path"])
            matrices: dict[str, np.memmap] = {}
            start = 0
            for chunk in store.results():
                for name, values in chunk.arrays.items():
                    if name not in matrices:
                        matrices[name] = np.lib.format.open_memmap(
                            temporaries[name], mode="w+", dtype=values.dtype, shape=(rows, *values.shape[1:])
                        )
                    matrices[name][start : start + len(values)] = values
                index.writerows([paths[position]] for position in chunk.positions.tolist())
                start += len(chunk.positions)
            for name, temporary in temporaries.items():
                if name in matrices:
                    matrices.pop(name).flush()  # and unmapped, before the file is synced and renamed
                else:  # no image loaded: the row shape is unknown
                    np.save(temporary, np.zeros((0,), np.float32))


def write_errors(path: Path, store: ChunkStore, paths: Sequence[str]) -> int:
    """Write the errors file (``path, reason`` of each input that could not be read, in input
    order); return how many there are."""
    count = 0
    with replaced_atomically(path) as temporary, _open_text(temporary) as file:
        writer = csv.writer(file)
        writer.writerow(["path", "reason"])
        for chunk in store.results():
            for position, reason in chunk.failures():
                writer.writerow([paths[position], reason])
                count += 1
    return count


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    _write_json(path, record)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record a finished job left at ``path``, or None if there is none."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
