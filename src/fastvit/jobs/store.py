"""On-disk state of a batch job: committed chunks, resuming, and the final output files.

A job's inputs are cut into chunks of ``chunk_size`` consecutive inputs; chunk ``c`` holds the
results of inputs ``[c * chunk_size, (c + 1) * chunk_size)``. For ``--out emb.npy`` the files are::

    emb.parts/                 work in progress, removed once the outputs are written
        job.json               the job's identity: model, weights, transform, output kind, inputs...
        .lock                  locked by the process running the job: a second job is refused
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

import errno
import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastViTError, first_line
from ..files import replaced_atomically, write_json_atomically

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, jobs are not guarded against each other
    fcntl = None

__all__ = ["ChunkResult", "ChunkStore", "JobFiles", "read_record", "sidecar", "write_record"]

_JOB_FILE = "job.json"
_LOCK_FILE = ".lock"
_CHUNK_NAME = re.compile(r"chunk-(\d{8})\.npz")
_META_ARRAYS = ("positions", "failed_positions", "failed_reasons")


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
        self._locked: int | None = None  # the descriptor of the lock file, while this process holds it

    def exists(self) -> bool:
        return self.directory.exists()

    def start(self, identity: Mapping[str, Any], overwrite: bool = False) -> set[int]:
        """Open the store for a job with ``identity``: create it, or reopen the one a run of the
        same job left; return the indices of the chunks already committed. The directory stays
        locked to this process until :meth:`release` or :meth:`remove` (or the process ends).

        Raises:
            FastViTError: another process is writing the directory (a job of its own);
                it holds an unfinished job with another identity (unless ``overwrite``, which
                discards that job); or it is not a job directory at all.
        """
        identity = json.loads(json.dumps(identity))  # as it reads back from job.json
        job_file = self.directory / _JOB_FILE
        ours = (f".{_JOB_FILE}.tmp", _LOCK_FILE)  # left by a job killed before its job.json was written
        foreign = self.exists() and any(p.name not in ours for p in self.directory.iterdir())
        if foreign and not job_file.exists():
            raise FastViTError(f"{self.directory} exists and is not a fastvit job directory; move it away")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        if job_file.exists():
            stored = json.loads(job_file.read_text(encoding="utf-8"))
            if stored == identity:
                for index in self.committed():  # damaged from outside (a full disk, a bad copy): computed again
                    try:
                        zipfile.ZipFile(self._chunk_path(index)).close()
                    except (OSError, zipfile.BadZipFile):
                        self._chunk_path(index).unlink(missing_ok=True)
                return self.committed()
            if not overwrite:
                changed = sorted(key for key in identity.keys() | stored.keys() if identity.get(key) != stored.get(key))
                raise FastViTError(
                    f"{self.directory} holds an unfinished run with other settings (differing: {', '.join(changed)}); "
                    "rerun that command to finish it, or pass --overwrite to discard it and start over"
                )
            self._empty()
        write_json_atomically(job_file, identity)
        return set()

    def _lock(self) -> None:
        """Take the directory for this process: a POSIX lock on its lock file, which the system
        drops when the process ends however it ends (no stale lock outlives a killed job) and which
        the decoding workers it forks do not hold."""
        if self._locked is not None or fcntl is None:
            return
        descriptor = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise FastViTError(
                f"another fastvit job is writing {self.directory}: wait for it to end (or stop it), "
                "or choose another --out"
            ) from None
        self._locked = descriptor

    def release(self) -> None:
        """Let another job take the directory."""
        if self._locked is not None:
            os.close(self._locked)
            self._locked = None

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

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

    @contextmanager
    def _opened(self, index: int) -> Iterator[Any]:
        """The arrays of committed chunk ``index``; a damaged chunk is removed, with an error that says
        a rerun computes it again."""
        path = self._chunk_path(index)
        try:
            with np.load(path, allow_pickle=False) as stored:
                yield stored
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            path.unlink(missing_ok=True)
            raise FastViTError(
                f"{path} was damaged ({first_line(error)}) and is now removed; run the same command again to compute it"
            ) from error

    def read(self, index: int) -> ChunkResult:
        with self._opened(index) as stored:
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
            with self._opened(index) as stored:
                total += len(stored["positions"])
        return total

    def remove(self) -> None:
        """Delete the directory; ``job.json`` goes last, so an interrupted removal leaves a job
        that a rerun resumes (recomputing the chunks already deleted)."""
        self._empty()
        (self.directory / _JOB_FILE).unlink(missing_ok=True)
        (self.directory / _LOCK_FILE).unlink(missing_ok=True)
        self.directory.rmdir()
        self.release()

    def _empty(self) -> None:
        """Delete everything but ``job.json`` and the lock."""
        for path in self.directory.iterdir():
            if path.name not in (_JOB_FILE, _LOCK_FILE):
                path.unlink()


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


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    write_json_atomically(path, record)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record a finished job left at ``path``, or None if there is none."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
