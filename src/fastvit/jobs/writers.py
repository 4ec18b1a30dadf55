"""The output files of a job, written from its committed chunks in input order: predictions as CSV, JSONL
or Parquet, embeddings as ``.npy`` or Parquet, arrays as ``.npy`` files, and the errors file."""

from __future__ import annotations

import csv
import errno
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from ..errors import FastViTError
from ..files import replaced_atomically
from .store import ChunkStore

__all__ = ["EmbeddingsParquet", "NpyArrays", "PredictionsCsv", "PredictionsJsonl", "PredictionsParquet",
           "ResultsWriter", "write_errors"]


def _open_text(path: Path) -> TextIO:
    """A text file for CSV/JSONL output; undecodable bytes of file names are written back as they were."""
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline="")


class ResultsWriter(Protocol):
    """Turns the committed chunks of a finished job into its output files."""

    def files(self) -> tuple[Path, ...]: ...

    def check_inputs(self, paths: Sequence[str]) -> None:
        """Raise FastViTError, before anything is computed, for inputs whose results cannot be written."""

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
class PredictionsCsv(ResultsWriter):
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
class PredictionsJsonl(ResultsWriter):
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


class _ParquetWriter(ResultsWriter):
    path: Path

    def check_inputs(self, paths: Sequence[str]) -> None:
        for path in paths:
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                raise FastViTError(
                    f"{shown}: a file name that is not UTF-8 cannot go in a Parquet string column; rename it, or "
                    "write .csv, .jsonl or .npy, which keep the name's bytes"
                ) from None

    def _write(self, schema, tables: Iterator) -> None:
        import pyarrow.parquet as pq

        with replaced_atomically(self.path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
            for table in tables:
                writer.write_table(table)


@dataclass(frozen=True)
class PredictionsParquet(_ParquetWriter):
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

        self._write(schema, tables())


@dataclass(frozen=True)
class EmbeddingsParquet(_ParquetWriter):
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

        self._write(schema, tables())


@dataclass(frozen=True)
class NpyArrays(ResultsWriter):
    """Each output array as one ``.npy`` matrix (row ``i`` for the ``i``-th image that loaded, in
    input order) and ``index``: a CSV with the ``path`` of each row."""

    arrays: Mapping[str, Path]  # output name -> .npy file
    index: Path
    row_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # when known: for a job with no rows

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
                        _reserve(temporaries[name])
                    matrices[name][start : start + len(values)] = values
                index.writerows([paths[position]] for position in chunk.positions.tolist())
                start += len(chunk.positions)
            for name, temporary in temporaries.items():
                if name in matrices:
                    matrices.pop(name).flush()  # and unmapped, before the file is synced and renamed
                else:  # no image loaded
                    with open(temporary, "wb") as file:  # given a name, np.save would add ".npy" to it
                        np.save(file, np.zeros((0, *self.row_shapes.get(name, ())), np.float32))


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a file made to be written through a memory map (it is created
    sparse): a disk that fills would otherwise strike at a write into the map, as a SIGBUS that
    kills the process, not an error."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return
    with open(path, "r+b") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # else a filesystem without it
                raise OSError(error.errno, error.strerror, str(path)) from None


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
