"""Batch jobs as a library: inputs, outputs against direct model calls, bad files, resume state.

The CLI, a SIGKILLed run and torchrun are tested in test_cli.py. Models carry the synthetic
weights of conftest, loaded from a local safetensors file as the CLI would load them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastvit
from fastvit.data import imagenet_classes, resolve_data_config
from fastvit.errors import FastViTError, ImageLoadError
from fastvit.jobs.inputs import collect_inputs
from fastvit.jobs.job import BatchJob, JobSettings, PipelineOptions
from fastvit.jobs.outputs import Embedding, TopK, TorchForward, make_forward
from fastvit.jobs.pipeline import LoadedBatch, split_evenly
from fastvit.jobs.store import ChunkResult, ChunkStore, JobFiles, sidecar
from fastvit.jobs.writers import NpyArrays, PredictionsCsv, PredictionsJsonl, PredictionsParquet
from fastvit.runtime.predictor import AUTO_COMPILE_CALLS

from conftest import save_checkpoint, synthetic_model
from photo_folders import BAD_FILES, PIXEL_LIMIT, add_bad_files, direct_call, make_photos, read_csv

# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A folder of 12 photos and the bad files: (folder, photo paths, bad paths)."""
    folder = tmp_path_factory.mktemp("photos")
    good = make_photos(folder, 12)
    return folder, good, add_bad_files(folder)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return synthetic_model("fastvit_t8")


def make_job(checkpoint: Path, output, **options) -> BatchJob:
    num_classes = 0 if output == Embedding() else 1000
    model = fastvit.create_model("fastvit_t8", checkpoint_path=checkpoint, num_classes=num_classes)
    config = resolve_data_config(model=model)
    settings = JobSettings("fastvit_t8", str(checkpoint), config, output, chunk_size=4, max_image_pixels=PIXEL_LIMIT)
    return BatchJob(settings, make_forward(model.eval()), PipelineOptions(**options))


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def test_inputs_from_files_folders_globs_and_lists_in_order(tmp_path):
    for name in ("a/2.jpg", "a/10.PNG", "a/sub/1.jpg", "a/.hidden.jpg", "a/.cache/x.jpg", "a/readme.txt", "b.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "list.txt").write_text("listed/one.jpg\n\n  \nlisted/two.jpg\r\n")
    a, b = str(tmp_path / "a"), str(tmp_path / "b.jpg")
    folder = [f"{a}/10.PNG", f"{a}/2.jpg", f"{a}/sub/1.jpg"]  # images only, sorted, hidden ones left out

    assert collect_inputs([a]) == folder
    assert collect_inputs([b, a, f"{a}/readme.txt"]) == [b, *folder, f"{a}/readme.txt"]  # a file by name: as given
    assert collect_inputs([f"{tmp_path}/**/*.jpg"]) == [f"{a}/2.jpg", f"{a}/sub/1.jpg", b]
    assert collect_inputs([b], files_from=str(tmp_path / "list.txt")) == [b, "listed/one.jpg", "listed/two.jpg"]
    with pytest.raises(FastViTError, match="no such file or directory: '.*missing.jpg'"):
        collect_inputs([b, str(tmp_path / "missing.jpg")])
    with pytest.raises(FastViTError, match="no input images"):
        collect_inputs([f"{tmp_path}/*.webp"])
    with pytest.raises(FastViTError, match="cannot read the list of files"):
        collect_inputs([], files_from=str(tmp_path / "no-list.txt"))


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


def test_embed_folder_equals_direct_model_call_and_lists_bad_files(photos, checkpoint, reference, tmp_path):
    folder, good, bad = photos
    out = tmp_path / "emb.npy"
    writer, files = NpyArrays({"embedding": out}, sidecar(out, "paths.csv")), JobFiles.for_output(out)
    # batches of 3 in chunks of 4; bad files decoded in worker processes, which must survive them
    job = make_job(checkpoint, Embedding(), batch_size=3, workers=2)

    report = job.run_to_files([str(folder)], writer, files)

    assert (report.images, report.skipped, report.resumed) == (len(good), len(bad), 0)
    embeddings = np.load(out)
    assert embeddings.shape == (len(good), 768)
    np.testing.assert_allclose(embeddings, direct_call(reference, good, pre_logits=True), rtol=0, atol=1e-5)
    assert read_csv(sidecar(out, "paths.csv")) == [["path"], *([path] for path in good)]
    errors = read_csv(files.errors)
    assert errors[0] == ["path", "reason"] and [path for path, _ in errors[1:]] == bad
    for (path, reason), name in zip(errors[1:], sorted(BAD_FILES, key=lambda n: str(folder / n))):
        assert BAD_FILES[name] in reason, (path, reason)
    assert not files.parts.exists()
    assert json.loads(files.record.read_text())["images"] == len(good)

    written = {path: path.stat().st_mtime_ns for path in report.files}
    again = job.run_to_files([str(folder)], writer, files)
    assert again.already_finished and (again.images, again.skipped) == (len(good), len(bad))
    assert written == {path: path.stat().st_mtime_ns for path in report.files}


def prediction_rows_from_csv(path: Path) -> list[tuple[str, list[int], list[str], list[float]]]:
    header, *rows = read_csv(path)
    k = (len(header) - 1) // 3
    assert header == ["path", *(f"{field}_{r}" for r in range(1, k + 1) for field in ("index", "label", "probability"))]
    return [(row[0], [int(i) for i in row[1::3]], row[2::3], [float(p) for p in row[3::3]]) for row in rows]


def test_predictions_as_csv_and_jsonl(photos, checkpoint, reference, tmp_path):
    folder, good, bad = photos
    inputs = [good[3], bad[0], good[0], good[5]]  # not sorted: input order is kept
    labels = imagenet_classes()
    job = make_job(checkpoint, TopK(3), batch_size=4)

    job.run_to_files(inputs, PredictionsCsv(tmp_path / "p.csv", labels, 3), JobFiles.for_output(tmp_path / "p.csv"))
    job.run_to_files(inputs, PredictionsJsonl(tmp_path / "p.jsonl", labels), JobFiles.for_output(tmp_path / "p.jsonl"))

    rows = prediction_rows_from_csv(tmp_path / "p.csv")
    expected = torch.from_numpy(direct_call(reference, [good[3], good[0], good[5]])).softmax(-1).topk(3)
    assert [path for path, *_ in rows] == [good[3], good[0], good[5]]
    for (_, indices, row_labels, probabilities), values, top in zip(rows, expected.values, expected.indices):
        assert indices == top.tolist()
        assert row_labels == [labels[i] for i in indices]
        np.testing.assert_allclose(probabilities, values.numpy(), rtol=0, atol=1e-5)
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(r["path"], r["indices"], r["labels"], r["probabilities"]) for r in records] == rows
    assert [path for path, _ in read_csv(tmp_path / "p.errors.csv")[1:]] == [bad[0]]


def test_predictions_as_parquet(photos, checkpoint, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    folder, good, bad = photos
    labels = imagenet_classes()
    job = make_job(checkpoint, TopK(2), batch_size=4)
    for writer in (PredictionsCsv(tmp_path / "p.csv", labels, 2), PredictionsParquet(tmp_path / "p.parquet", labels)):
        job.run_to_files(good[:3], writer, JobFiles.for_output(writer.path))

    table = pq.read_table(tmp_path / "p.parquet").to_pylist()
    rows = prediction_rows_from_csv(tmp_path / "p.csv")
    assert [(r["path"], r["indices"], r["labels"]) for r in table] == [row[:3] for row in rows]
    np.testing.assert_allclose([r["probabilities"] for r in table], [row[3] for row in rows], atol=1e-6)


def test_device_forward_is_the_fused_model():
    """The model call used on GPUs (run here on the CPU): fused, eval, inference mode, and in
    bf16 autocast for precision='bf16'."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = synthetic_model("fastvit_t8")(x)
    torch.testing.assert_close(TorchForward(synthetic_model("fastvit_t8"), "fp32", "cpu")(x), expected, rtol=1e-4, atol=1e-5)
    bf16 = TorchForward(synthetic_model("fastvit_t8"), "bf16", "cpu")(x)
    assert bf16.dtype == torch.bfloat16 and float((bf16.float() - expected).abs().max()) < 0.1 * float(expected.abs().max())


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(FastViTError, match=r"pip install 'fastvit\[parquet\]'"):
        PredictionsParquet(tmp_path / "p.parquet", imagenet_classes())


def test_unreadable_file_is_skipped_as_permission_denied(photos, checkpoint, monkeypatch):
    # tests may run as root, whom chmod cannot stop: make Pillow meet the error open() raises
    folder, good, _ = photos
    locked, pillow_open = good[1], Image.open

    def open_unless_locked(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return pillow_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_unless_locked)
    result = make_job(checkpoint, Embedding()).run_in_memory([good[0], locked])

    assert [list(chunk.failures()) for chunk in result.chunks] == [[(1, "permission denied")]]
    assert result.chunks[0].positions.tolist() == [0] and result.stats.images == 1


def test_every_worker_decodes_a_share_of_each_batch():
    """A batch is cut into one share per decoding worker and joined back in order, so the model's
    first batch waits for a share, not for the whole of it."""
    assert split_evenly([5, 6, 7], 2) == [[5, 6], [7]]
    assert split_evenly([5], 4) == [[5]] and split_evenly([], 2) == [[]] and split_evenly([1, 2], 0) == [[1, 2]]

    def images(*values: int) -> torch.Tensor:
        pixels = torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        return pixels.contiguous(memory_format=torch.channels_last)

    joined = LoadedBatch.joined([LoadedBatch([0, 1], images(1, 2), [(2, "bad")]), LoadedBatch([], None, [(3, "bad")]),
                                 LoadedBatch([4], images(5), [])])
    assert joined.positions == [0, 1, 4] and joined.failures == [(2, "bad"), (3, "bad")]
    assert joined.images[:, 0, 0, 0].tolist() == [1, 2, 5]
    assert joined.images.is_contiguous(memory_format=torch.channels_last)


def test_a_short_job_never_waits_for_the_compiler(photos, checkpoint):
    """A job tells its Predictor how many batches are coming: too few to repay compiling, so it never
    compiles them, however many times the auto rule would have counted."""
    _, good, _ = photos
    job = make_job(checkpoint, Embedding(), batch_size=1)
    result = job.run_in_memory(good[:1] * (AUTO_COMPILE_CALLS + 2))
    assert result.stats.images == AUTO_COMPILE_CALLS + 2
    assert job.forward.compiled_shapes == [] and not job.forward.compiler.pieces


# ----------------------------------------------------------------------------------------------
# Stopping, resuming
# ----------------------------------------------------------------------------------------------


def test_a_resumed_job_computes_what_an_uninterrupted_one_does(photos, checkpoint, tmp_path, monkeypatch):
    """Bit for bit, although compiled and uncompiled pieces differ in the last bits: whether a shape
    compiles is decided from the whole job, not from the batches a run has left (a job of 4 batches
    compiles; resumed with 2 left, it used to run them uncompiled)."""
    monkeypatch.setattr(fastvit.runtime.predictor, "COMPILE_PAYBACK_CALLS", 4)
    folder, good, _ = photos
    inputs = [*good[:4], str(folder / "empty.jpg"), *good[4:7]]  # two chunks of two batches of 2, one image skipped

    def embed(directory: Path, strict: bool = False) -> np.ndarray:
        out = tmp_path / directory / "emb.npy"
        job = make_job(checkpoint, Embedding(), batch_size=2, strict=strict)
        job.run_to_files(inputs, NpyArrays({"embedding": out}, sidecar(out, "paths.csv")), JobFiles.for_output(out))
        assert job.forward.compiled_shapes == [("forward", (2, 3, 256, 256))]
        return np.load(out)

    with pytest.raises(ImageLoadError):
        embed(Path("resumed"), strict=True)  # stops at the empty file, chunk 0 committed
    np.testing.assert_array_equal(embed(Path("resumed")), embed(Path("whole")))


def test_a_damaged_chunk_is_computed_again(photos, checkpoint, tmp_path):
    """A committed chunk damaged from outside: an emptied file is found when the job resumes and computed
    again; one whose bytes were overwritten is found when the outputs are written, removed, and the
    rerun computes it."""
    folder, good, _ = photos
    inputs = [*good[:4], str(folder / "empty.jpg"), *good[4:7]]
    out = tmp_path / "emb.npy"
    writer, files = NpyArrays({"embedding": out}, sidecar(out, "paths.csv")), JobFiles.for_output(out)
    job = make_job(checkpoint, Embedding(), batch_size=2)
    chunk = files.parts / "chunk-00000000.npz"
    with pytest.raises(ImageLoadError):
        replace(job, options=replace(job.options, strict=True)).run_to_files(inputs, writer, files)
    chunk.write_bytes(b"")
    assert job.run_to_files(inputs, writer, files).resumed == 0
    expected = np.load(out)

    out.unlink()
    with pytest.raises(ImageLoadError):
        replace(job, options=replace(job.options, strict=True)).run_to_files(inputs, writer, files)
    data = bytearray(chunk.read_bytes())
    data[200:260] = bytes(60)
    chunk.write_bytes(data)
    with pytest.raises(FastViTError, match="chunk-00000000.npz was damaged .* run the same command again"):
        job.run_to_files(inputs, writer, files)
    job.run_to_files(inputs, writer, files)
    np.testing.assert_array_equal(np.load(out), expected)


def test_strict_stops_at_first_bad_file_keeping_committed_chunks(photos, checkpoint, tmp_path):
    folder, good, _ = photos
    empty = str(folder / "empty.jpg")
    inputs = [*good[:8], empty, good[8]]  # chunks of 4: the bad file is in the third
    out = tmp_path / "emb.npy"
    writer, files = NpyArrays({"embedding": out}, sidecar(out, "paths.csv")), JobFiles.for_output(out)

    with pytest.raises(ImageLoadError, match="empty.jpg': the file is empty"):
        make_job(checkpoint, Embedding(), batch_size=2, strict=True).run_to_files(inputs, writer, files)
    assert ChunkStore(files.parts).committed() == {0, 1} and not out.exists()

    report = make_job(checkpoint, Embedding(), batch_size=2).run_to_files(inputs, writer, files)
    assert (report.resumed, report.run.images, report.images, report.skipped) == (8, 1, 9, 1)


def test_identity_changes_with_whatever_changes_the_results(checkpoint, tmp_path):
    other_weights = save_checkpoint(tmp_path / "copy.safetensors")
    other_weights.write_bytes(other_weights.read_bytes()[:-1] + b"\0")
    config = resolve_data_config(model="fastvit_t8")
    base = JobSettings("fastvit_t8", str(checkpoint), config, TopK(5))
    paths = ["a.jpg", "b.jpg"]
    variants = [
        replace(base, model="fastvit_t8.apple_dist_in1k"),
        replace(base, checkpoint=str(other_weights)),
        replace(base, data_config={**config, "crop_pct": 1.0}),
        replace(base, output=TopK(3)),
        replace(base, output=Embedding()),
        replace(base, precision="bf16"),
        replace(base, backend="onnxruntime"),
        replace(base, chunk_size=512),
        replace(base, max_image_pixels=None),
        replace(base, decode="fast"),
    ]
    assert base.identity(paths, 32, 1) == replace(base, data_config=dict(config)).identity(list(paths), 32, 1)
    identities = [base.identity(paths, 32, 1), base.identity(paths[::-1], 32, 1), base.identity(paths, 8, 1),
                  base.identity(paths, 32, 2), *(v.identity(paths, 32, 1) for v in variants)]
    assert len({json.dumps(identity, sort_keys=True) for identity in identities}) == len(identities)


def chunk(index: int, positions: list[int]) -> ChunkResult:
    values = np.arange(len(positions) * 2, dtype=np.float32).reshape(-1, 2)
    return ChunkResult(index, np.array(positions), {"embedding": values}, np.array([9]), ["the file is empty"])


def test_store_resumes_its_own_job_only(tmp_path):
    store = ChunkStore(tmp_path / "emb.parts")
    assert store.start({"job": "a"}) == set()
    store.commit(chunk(3, [6, 7]))
    store.release()
    with ChunkStore(store.directory) as again:
        assert again.start({"job": "a"}) == {3}
    stored = store.read(3)
    assert stored.positions.tolist() == [6, 7] and list(stored.failures()) == [(9, "the file is empty")]
    np.testing.assert_array_equal(stored.arrays["embedding"], chunk(3, [6, 7]).arrays["embedding"])

    with pytest.raises(FastViTError, match=r"other settings \(differing: job\).*--overwrite"):
        store.start({"job": "b"})
    assert store.start({"job": "b"}, overwrite=True) == set()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").touch()
    with pytest.raises(FastViTError, match="not a fastvit job directory"):
        ChunkStore(tmp_path / "mine").start({"job": "a"})


def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(tmp_path):
    """Two jobs writing one output: the second, even with --overwrite, used to delete the first's
    chunks, which the first then committed into the second's job."""
    first = ChunkStore(tmp_path / "emb.parts")
    first.start({"job": "a"})
    first.commit(chunk(0, [0, 1]))
    start = f"from fastvit.jobs.store import ChunkStore; ChunkStore({str(first.directory)!r}).start({{'job': 'b'}}, %s)"
    for overwrite in (False, True):
        refused = subprocess.run([sys.executable, "-c", start % overwrite], capture_output=True, text=True)
        assert refused.returncode == 1 and "another fastvit job is writing" in refused.stderr
    assert first.committed() == {0}
    first.release()
    with ChunkStore(first.directory) as second:
        assert second.start({"job": "a"}) == {0}
    # The lock goes with a killed process, and is not held by the processes it forked (its decoding
    # workers), which may outlive it by a moment.
    forks_and_dies = (start % True) + "; import os, sys, time\nif os.fork() == 0: time.sleep(60)\n"
    forks_and_dies += "print(flush=True); os.kill(os.getpid(), 9)"
    process = subprocess.Popen([sys.executable, "-c", forks_and_dies], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert process.stdout.readline() == "\n" and process.wait(timeout=60) == -9
        with ChunkStore(first.directory) as third:  # while the fork still lives
            assert third.start({"job": "c"}, overwrite=True) == set()
    finally:
        os.killpg(process.pid, signal.SIGKILL)


def test_interrupted_commit_leaves_no_chunk_behind(tmp_path, monkeypatch):
    store = ChunkStore(tmp_path / "emb.parts")
    store.start({"job": "a"})

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half a chunk")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.commit(chunk(0, [0, 1]))
    assert store.committed() == set()
    assert sorted(path.name for path in store.directory.iterdir()) == [".lock", "job.json"]


_FILL_A_SMALL_DISK = """
import sys
from pathlib import Path
import numpy as np
from fastvit.jobs.store import ChunkResult, ChunkStore
from fastvit.jobs.writers import NpyArrays
store = ChunkStore(Path(sys.argv[1]))
store.start({"job": "a"})
for index in range(4):  # 4 x 256 rows of 1 KiB: 1 MiB of results
    positions = np.arange(index * 256, (index + 1) * 256)
    store.commit(ChunkResult(index, positions, {"embedding": np.ones((256, 256), np.float32)}, np.array([], int), []))
out = Path(sys.argv[2])
try:
    NpyArrays({"embedding": out}, out.with_suffix(".paths.csv")).write(store, [str(i) for i in range(1024)])
except OSError as error:
    sys.exit(f"{error.filename}: {error.strerror}")
"""


def test_npy_output_on_a_full_disk_is_an_error_not_a_crash(tmp_path, monkeypatch):
    """The .npy matrix is written through a memory map: on a full disk the write into the map was
    a SIGBUS that killed the job without a word, leaving the temporary file behind."""
    store = ChunkStore(tmp_path / "emb.parts")
    store.start({"job": "a"})
    store.commit(chunk(0, [0, 1]))
    out = tmp_path / "emb.npy"
    out.write_bytes(b"the last run's output")

    def full(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space left on device") as error:
        NpyArrays({"embedding": out}, sidecar(out, "paths.csv")).write(store, ["a.jpg", "b.jpg"])
    assert error.value.filename == str(out)  # named, and by its own name, not the temporary one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "emb.parts"]
    assert out.read_bytes() == b"the last run's output"

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem (a real full disk) needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        script = [sys.executable, "-c", _FILL_A_SMALL_DISK, str(tmp_path / "big.parts"), str(small / "e.npy")]
        run = subprocess.run(script, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run  # -7 (SIGBUS) before
        assert run.stderr == f"{small / 'e.npy'}: No space left on device\n"
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_fast_decoding_job_and_its_resume_identity(photos, checkpoint, reference, tmp_path):
    """decode='fast' runs through the workers to embeddings close to the exact ones; a job stopped
    with one decode mode resumes with that mode only."""
    folder, good, _ = photos
    empty = str(folder / "empty.jpg")
    inputs = [*good[:8], empty, good[8]]  # chunks of 4: strict stops in the third
    out = tmp_path / "emb.npy"
    writer, files = NpyArrays({"embedding": out}, sidecar(out, "paths.csv")), JobFiles.for_output(out)

    exact = make_job(checkpoint, Embedding(), batch_size=2)
    fast = replace(exact, settings=replace(exact.settings, decode="fast"))

    with pytest.raises(ImageLoadError):
        replace(fast, options=replace(fast.options, strict=True)).run_to_files(inputs, writer, files)
    with pytest.raises(FastViTError, match=r"other settings \(differing: decode\)"):
        exact.run_to_files(inputs, writer, files)
    report = replace(fast, options=replace(fast.options, workers=2)).run_to_files(inputs, writer, files)

    assert (report.resumed, report.images, report.skipped) == (8, 9, 1)
    expected, embeddings = direct_call(reference, [*good[:8], good[8]], pre_logits=True), np.load(out)
    cosine = (expected * embeddings).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(embeddings, axis=1)
    assert cosine.min() > 0.9999 and 0 < np.abs(embeddings - expected).max() < 0.05
    assert json.loads(files.record.read_text())["identity"]["decode"] == "fast"
