"""The ``fastvit`` command: single-image commands, one-line errors and exit codes, a run killed
with SIGKILL and resumed, and a 2-process torchrun run against the 1-process one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from fastvit.cli import main
from fastvit.data import create_transform, imagenet_classes, load_image, resolve_data_config

from conftest import synthetic_model
from photo_folders import BAD_FILES, PIXEL_LIMIT, add_bad_files, direct_call, make_photos, read_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A folder of 16 photos and the bad files: (folder, photo paths, bad paths)."""
    folder = tmp_path_factory.mktemp("photos")
    good = make_photos(folder, 16, seed=1)
    return folder, good, add_bad_files(folder)


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ----------------------------------------------------------------------------------------------
# One image at a time, as before batch jobs
# ----------------------------------------------------------------------------------------------


def test_predict_prints_top_k(photos, checkpoint, capsys):
    _, good, _ = photos
    code, out, err = run(capsys, "predict", good[0], "--checkpoint", checkpoint, "--top-k", "3")
    lines = out.splitlines()
    assert code == 0 and err == "" and lines[0] == good[0] and len(lines) == 4
    labels = imagenet_classes()
    for rank, line in enumerate(lines[1:], 1):
        label, index = line.split("%  ", 1)[1].rsplit(" (", 1)
        assert line.startswith(f"  {rank}. ") and labels[int(index.rstrip(")"))] == label


def test_predict_json_is_one_object_or_a_list(photos, checkpoint, capsys):
    _, good, _ = photos
    code, out, _ = run(capsys, "predict", good[0], "--checkpoint", checkpoint, "--top-k", "2", "--json")
    single = json.loads(out)
    assert code == 0 and single["image"] == good[0] and len(single["top_k"]) == 2
    code, out, _ = run(capsys, "predict", good[1], good[0], "--checkpoint", checkpoint, "--top-k", "2", "--json")
    both = json.loads(out)
    assert code == 0 and [p["image"] for p in both] == [good[1], good[0]] and both[1] == single


def test_features_of_one_image_and_of_a_folder(photos, checkpoint, capsys, tmp_path):
    folder, good, _ = photos
    code, out, _ = run(capsys, "features", good[0], "--checkpoint", checkpoint, "--out", tmp_path / "maps.npz")
    shapes = ["(48, 64, 64) (reduction 4)", "(96, 32, 32) (reduction 8)", "(192, 16, 16) (reduction 16)",
              "(384, 8, 8) (reduction 32)"]
    assert code == 0
    assert out.splitlines() == [*(f"stage {i}: {s}" for i, s in enumerate(shapes)), f"wrote {tmp_path / 'maps.npz'}"]
    single = np.load(tmp_path / "maps.npz")
    assert single["stage3"].shape == (384, 8, 8)

    code, out, _ = run(capsys, "features", good[1], good[0], "--checkpoint", checkpoint, "--out", tmp_path / "maps",
                       "--out-indices", "1", "3")
    assert code == 0 and "stage 3: (384, 8, 8) (reduction 32)" in out
    maps = {i: np.load(tmp_path / "maps" / f"stage{i}.npy") for i in (1, 3)}
    assert maps[1].shape == (2, 96, 32, 32) and not (tmp_path / "maps" / "stage0.npy").exists()
    np.testing.assert_allclose(maps[3][1], single["stage3"], rtol=1e-5, atol=1e-5)
    model = synthetic_model("fastvit_t8", features_only=True, out_indices=(1, 3))
    transform = create_transform(**resolve_data_config(model=model))
    with torch.inference_mode():
        expected = model(torch.stack([transform(load_image(path)) for path in (good[1], good[0])]))
    for index, values in zip((1, 3), expected):
        np.testing.assert_allclose(maps[index], values.numpy(), rtol=1e-5, atol=1e-5)  # maps reach 20 and more
    assert read_csv(tmp_path / "maps" / "paths.csv") == [["path"], [good[1]], [good[0]]]

    # in any order, repeated or counted from the last: each map under its own stage (they were swapped)
    code, out, _ = run(capsys, "features", good[0], "--checkpoint", checkpoint, "--out", tmp_path / "any.npz",
                       "--out-indices", "-1", "1", "3")
    assert code == 0 and out.splitlines()[:2] == [f"stage 1: {shapes[1]}", f"stage 3: {shapes[3]}"]
    assert {name: values.shape for name, values in np.load(tmp_path / "any.npz").items()} == {
        "stage1": (96, 32, 32), "stage3": (384, 8, 8)}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_features_and_embeddings_from_the_other_runtimes(backend, photos, checkpoint, capsys, tmp_path, monkeypatch):
    """``--backend`` on features (chosen stages, a graph of their own) and embed gives what torch gives."""
    pytest.importorskip(backend)
    monkeypatch.setenv("FASTVIT_CACHE", str(tmp_path / "cache"))
    _, good, _ = photos
    images = good[:5]
    results = {}
    for runtime in ("torch", backend):
        for stages in (["0", "1", "2", "3"], ["1", "3"]):
            out = tmp_path / runtime / "-".join(stages)
            code, _, err = run(capsys, "features", *images, "--checkpoint", checkpoint, "--out", out, "--backend",
                               runtime, "--out-indices", *stages, "--workers", "0", "--quiet")
            assert code == 0, err
            results[runtime, out.name] = [np.load(out / f"stage{i}.npy") for i in stages]
        code, _, err = run(capsys, "embed", *images, "--checkpoint", checkpoint, "--out", tmp_path / runtime / "emb.npy",
                           "--backend", runtime, "--workers", "0", "--quiet")
        assert code == 0, err
        results[runtime, "embed"] = [np.load(tmp_path / runtime / "emb.npy")]
    for runtime, what in [key for key in results if key[0] == "torch"]:
        for ours, theirs in zip(results[runtime, what], results[backend, what], strict=True):
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def test_embed_glob_and_list_of_files(photos, checkpoint, capsys, tmp_path):
    folder, good, bad = photos
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good[2]}\n{bad[0]}\n")
    code, out, _ = run(capsys, "embed", f"{folder}/sub/*.jpg", "--files-from", listing, "--out", tmp_path / "emb.npy",
                       "--checkpoint", checkpoint, "--workers", "0", "--max-image-pixels", PIXEL_LIMIT)
    in_sub = sorted(path for path in good if "/sub/" in path)
    assert code == 0
    assert out.splitlines()[0] == f"images: {len(in_sub) + 1}, skipped: 2 (listed in {tmp_path / 'emb.errors.csv'})"
    expected = direct_call(synthetic_model("fastvit_t8"), [*in_sub, good[2]], pre_logits=True)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, rtol=0, atol=1e-5)
    errors = read_csv(tmp_path / "emb.errors.csv")[1:]
    assert [path for path, _ in errors] == [f"{folder}/sub/truncated.jpg", bad[0]]


def test_embed_projected_and_normalized(photos, checkpoint, capsys, tmp_path):
    """--projected keeps the head (a MobileCLIP tower's CLIP embedding; here T8's logits), and
    --normalize gives unit vectors."""
    _, good, _ = photos
    code, _, _ = run(capsys, "embed", good[0], good[1], "--checkpoint", checkpoint, "--out", tmp_path / "e.npy",
                     "--projected", "--normalize", "--workers", "0")
    outputs = direct_call(synthetic_model("fastvit_t8"), good[:2])
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), outputs / np.linalg.norm(outputs, axis=1, keepdims=True),
                               rtol=0, atol=1e-6)


def test_embed_decode_fast_is_recorded_with_the_job(photos, checkpoint, capsys, tmp_path):
    _, good, _ = photos
    code, _, _ = run(capsys, "embed", good[0], "--checkpoint", checkpoint, "--out", tmp_path / "e.npy",
                     "--decode", "fast", "--workers", "0")
    assert code == 0 and json.loads((tmp_path / "e.job.json").read_text())["identity"]["decode"] == "fast"


def test_predict_names_the_classes_of_a_fine_tuned_model(photos, checkpoint, capsys, tmp_path):
    _, good, _ = photos
    state = load_file(checkpoint)
    state["head.fc.weight"], state["head.fc.bias"] = state["head.fc.weight"][:3], state["head.fc.bias"][:3]
    tuned = tmp_path / "tuned.safetensors"
    save_file(state, tuned)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    code, out, _ = run(capsys, "predict", good[0], "--checkpoint", tuned, "--labels", tmp_path / "labels.txt", "--json")
    assert code == 0 and {entry["label"] for entry in json.loads(out)["top_k"]} == {"cat", "dog", "bird"}
    code, _, err = run(capsys, "predict", good[0], "--checkpoint", tuned)
    assert code == 2 and "outputs 3 values, not the 1000 ImageNet classes: name its classes with --labels" in err


# ----------------------------------------------------------------------------------------------
# Errors and exit codes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["predict", "{photo}", "--model", "fastvit_t9"], 2, "unknown model 'fastvit_t9'; did you mean"),
        (["predict", "{folder}/missing.jpg"], 2, "no such file or directory: '{folder}/missing.jpg'"),
        (["predict", "{photo}", "--checkpoint", "{folder}/notes.jpg"], 2, "{folder}/notes.jpg"),
        (["predict", "{folder}/notes.jpg"], 1, "skipped {folder}/notes.jpg: not an image format Pillow can read"),
        (["predict", "{photo}", "--out", "{folder}/preds.txt"], 2, "unknown output format"),
        (["embed", "{photo}", "--out", "{folder}/emb.npy", "--backend", "onnxruntime", "--precision", "bf16"], 2,
         "precision='bf16' is available with backend='torch' or 'openvino'"),
        (["embed", "--files-from", "{folder}/none.txt", "--out", "{folder}/e.npy"], 2, "cannot read the list of files"),
        (["features", "{folder}", "--out", "{folder}/maps.npz"], 2, "give --out FOLDER"),
        (["embed", "{folder}", "--out", "{folder}/emb.npy", "--strict", "--workers", "0"], 1,
         "error: cannot load image '{folder}/bomb.png': refused as a possible decompression bomb"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(photos, checkpoint, capsys, tmp_path, arguments, code, message):
    folder, good, _ = photos
    fill = {"photo": good[0], "folder": folder}
    arguments = [a.format(**fill) for a in arguments]
    if "--checkpoint" not in arguments:
        arguments += ["--checkpoint", str(checkpoint)]
    if "--out" in arguments:  # outputs go to this test's own folder
        index = arguments.index("--out") + 1
        arguments[index] = str(tmp_path / Path(arguments[index]).name)
    returned, _, err = run(capsys, *arguments, "--max-image-pixels", PIXEL_LIMIT)
    command = arguments[0]
    assert returned == code
    assert err.count("\n") == 1 and err.startswith(f"fastvit {command}: ") and message.format(**fill) in err


def test_an_output_name_taken_by_a_folder_is_refused_up_front(photos, checkpoint, capsys, tmp_path):
    _, good, _ = photos
    (tmp_path / "emb.npy").mkdir()
    code, _, err = run(capsys, "embed", good[0], "--checkpoint", str(checkpoint), "--out", str(tmp_path / "emb.npy"))
    in_the_way = f"--out {tmp_path / 'emb.npy'}: a folder of that name is in the way of the output file"
    assert code == 2 and err == f"fastvit embed: error: {in_the_way}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["emb.npy"]


def test_a_job_where_no_image_loads_still_writes_its_outputs(photos, checkpoint, capsys, tmp_path):
    """Exit 1, the reasons in the errors file, and outputs with no rows (the .npy used to fail and
    leave a job that no rerun could finish)."""
    folder, _, _ = photos
    for out in (tmp_path / "emb.npy", tmp_path / "table.parquet"):
        for _ in range(2):  # and a rerun finds it done
            code, printed, err = run(capsys, "embed", f"{folder}/notes.jpg", "--checkpoint", str(checkpoint),
                                     "--out", str(out))
            assert code == 1 and "Traceback" not in err, (printed, err)
        if out.suffix == ".npy":
            assert np.load(out).shape == (0, 768)
            assert (tmp_path / "emb.paths.csv").read_text().splitlines() == ["path"]
        else:
            assert pytest.importorskip("pyarrow.parquet").read_table(out).num_rows == 0
        assert read_csv(out.with_name(out.stem + ".errors.csv"))[1][1] == "not an image format Pillow can read"


def test_a_file_name_parquet_cannot_hold_is_refused_before_any_work(photos, checkpoint, capsys, tmp_path):
    """Parquet strings are UTF-8; the job used to fail only when writing, after computing everything."""
    _, good, _ = photos
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png")  # Latin-1 bytes
    shutil.copy(good[0], odd)
    code, _, err = run(capsys, "predict", odd, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p.parquet"))
    assert code == 2 and err.count("\n") == 1 and "caf\\xe9.png: a file name that is not UTF-8" in err
    assert not (tmp_path / "p.parts").exists()
    code, _, _ = run(capsys, "predict", odd, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p.csv"))
    assert code == 0 and (tmp_path / "p.csv").read_bytes().splitlines()[1].startswith(os.fsencode(odd))


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_pixel_limit_below_the_models_input_refuses_only_larger_files(photos, checkpoint, capsys, tmp_path, workers):
    """The limit is checked when a file is opened: Pillow's global limit also applies to crops, so
    the transform's 256x256 crop of a 2x2 image was refused (or warned about) under a low limit."""
    _, good, _ = photos
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (2, 2), (200, 30, 30)).save(tiny)
    out = tmp_path / "preds.csv"
    code, _, err = run(capsys, "predict", good[0], str(tiny), "--checkpoint", str(checkpoint), "--out", str(out),
                       "--max-image-pixels", "1000", "--workers", workers)
    assert code == 0 and "Traceback" not in err and "Warning" not in err, err
    assert [row[0] for row in read_csv(out)[1:]] == [str(tiny)]
    assert read_csv(tmp_path / "preds.errors.csv")[1] == [good[0], "refused as a possible decompression bomb "
                                                                    "(over the limit of 1000 pixels)"]


BAD_ARGUMENTS = {
    "list": [["nothing*"]],
    "info": [["fastvit_t8", "--input-size", "0", "0"], ["fastvit_t8", "--input-size", "31", "256"],
             ["fastvit_t8", "--input-size", "ten", "256"], ["fastvit_t99"]],
    "predict": [["{photo}", "--batch-size", "0"], ["{photo}", "--top-k", "0"], ["{photo}", "--workers", "-1"],
                ["{photo}", "--chunk-size", "0"], ["{photo}", "--max-image-pixels", "-5"],
                ["{photo}", "--device", "cuda"], ["{photo}", "--device", "cuda:7"], ["{photo}", "--device", "tpu"],
                ["{photo}", "--out", "{blocker}/preds.csv"], ["{photo}", "--decode", "fastest"],
                ["{photo}", "--top-k", "1001"]],
    "features": [["{photo}", "--out-indices", "7"], ["{photo}", "--out-indices", "-5"],
                 ["{photo}", "--out", "{blocker}/maps"], ["{photo}", "--device", "cuda"], ["{photo}", "--decode", "draft"]],
    "embed": [["{photo}", "--out", "{blocker}/emb.npy"], ["{photo}", "--out", "emb.npy", "--batch-size", "-3"],
              ["{photo}", "--out", "emb.npy", "--device", "cuda"], ["{photo}", "--out", "emb.npy", "--decode", "Fast"]],
    "export": [["fastvit_t8", "--opset", "3"], ["fastvit_t8", "--opset", "99"], ["fastvit_t8", "--input-size", "0", "0"],
               ["fastvit_t8", "--batch-size", "0"], ["fastvit_t8", "--out", "{blocker}/t8.onnx"],
               ["fastvit_t8", "--format", "tflite"], ["fastvit_t8", "--format", "openvino", "--out", "t8.onnx"]],
    "benchmark": [["--batch-sizes", "0"], ["--rounds", "0"], ["--threads", "0"], ["--input-size", "16", "16"],
                  ["--precision", "fp16"], ["--paths", "tensorrt"]],
    "serve": [["--port", "70000"], ["--port", "http"], ["--workers", "0"], ["--max-batch-size", "0"],
              ["--max-wait-ms", "-1"], ["--timeout", "0"], ["--timeout", "nan"], ["--max-upload-mb", "big"],
              ["--precision", "fp16"], ["--backend", "tensorrt"], ["--input-size", "16", "16"],
              ["--host", "192.0.2.1"], ["--labels", "{blocker}/labels.txt", "--port", "0"], ["--decode", "draft"]],
    "train": [["{photo}"], ["--out", "{blocker}/run", "--val-split", "1.5"], ["--out", "{blocker}/run", "--epochs", "0"],
              ["--out", "{blocker}/run", "--lr", "-1"], ["--out", "{blocker}/run", "--batch-size", "0"],
              ["--out", "{blocker}/run", "--input-size", "16", "16"], ["--out", "{blocker}/run", "--device", "cuda"],
              ["--out", "{blocker}/run", "--scale", "0.5", "2"], ["--out", "{blocker}/run", "--precision", "fp8"],
              ["--out", "{blocker}/run", "--remode", "noise"], ["--out", "{blocker}/run", "--resume", "{blocker}"],
              ["--resume", "{blocker}"], ["--out", "{blocker}/run", "--freeze-backbone", "--layer-decay", "0.7"],
              ["{photo}", "--out", "{blocker}/run", "--model", "fastvit_t8", "--no-pretrained"],
              ["--out", "{blocker}/run", "--aa", "augmix-m5"], ["--out", "{blocker}/run", "--aa", "rand-x9"],
              ["{photo}", "--out", "{blocker}/run", "--channels-last", "--device", "cpu"],
              ["--out", "{blocker}/run", "--decode", "draft"],
              ["{photo}", "--out", "{blocker}/run", "--no-pretrained", "--checkpoint", "{photo}"]],
    "validate": [["{photo}", "--batch-size", "0"], ["{photo}", "--device", "cuda"], ["{photo}", "--precision", "fp16"],
                 ["{blocker}"], ["{photo}", "--decode", "draft"]],
}


@pytest.mark.parametrize(
    ("command", "arguments"), [(command, args) for command, cases in BAD_ARGUMENTS.items() for args in cases]
)
def test_bad_arguments_of_every_command_fail_in_one_line(photos, checkpoint, capsys, tmp_path, command, arguments):
    """Out-of-range numbers, impossible sizes, an unavailable device, an unsupported opset, an output
    that cannot be written: one line on stderr, exit code 2, no traceback."""
    blocker = tmp_path / "a-file"  # a file where a folder should be: nothing can be written under it
    blocker.write_text("")
    arguments = [a.format(photo=photos[1][0], blocker=blocker) for a in arguments]
    if command in ("predict", "features", "embed", "export", "validate"):
        arguments += ["--checkpoint", str(checkpoint)]
    try:
        code = main([command, *arguments])
    except SystemExit as exit:  # argparse refused the arguments
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"fastvit {command}: error: "), err


def test_a_real_process_fails_in_one_line(photos, checkpoint):
    folder, _, _ = photos
    done = run_process(sys.executable, "-m", "fastvit", "embed", folder / "missing", "--out", folder / "emb.npy",
                       "--checkpoint", checkpoint)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"fastvit embed: error: no such file or directory: '{folder / 'missing'}'\n"


def test_the_command_keeps_its_imports_out_of_the_garbage_collectors_sight():
    """A full collection walks every tracked object, some 170k after torch's import (60-90 ms each on
    the 2-core VM, several in a run); the command freezes them first. A `fastvit predict` of one photo
    took 0.1-0.9 s less in alternating processes."""
    script = "import gc, sys; from fastvit.cli import main; sys.argv = ['fastvit', 'list']; main(); " \
             "print(gc.get_freeze_count(), file=sys.stderr)"
    done = run_process(sys.executable, "-c", script)
    assert done.returncode == 0 and int(done.stderr.strip().splitlines()[-1]) > 100_000


def test_progress_bar_on_a_terminal(photos, checkpoint, tmp_path):
    folder, _, _ = photos
    terminal, process_side = pty.openpty()
    fcntl.ioctl(process_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 rows, 120 columns
    command = ["embed", f"{folder}/sub", "--out", tmp_path / "emb.npy", "--checkpoint", checkpoint, "--workers", "0"]
    process = subprocess.Popen([sys.executable, "-m", "fastvit", *map(str, command)], stdout=subprocess.PIPE,
                               stderr=process_side, cwd=ROOT)
    os.close(process_side)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while data := os.read(terminal, 4096):
            shown += data
    os.close(terminal)
    assert process.wait(timeout=60) == 0 and process.stdout.read().decode().startswith("images: 6, skipped: 1")
    last = shown.decode().rstrip().split("\r")[-1]  # the bar redraws itself after each batch
    assert "100%" in last and "7/7" in last and "img/s" in last and "skipped=1" in last, shown


# ----------------------------------------------------------------------------------------------
# Killed and resumed; several processes
# ----------------------------------------------------------------------------------------------

JOB_FLAGS = ["--chunk-size", "2", "--batch-size", "2", "--workers", "1", "--max-image-pixels", str(PIXEL_LIMIT)]


@pytest.fixture(scope="module")
def uninterrupted(photos, checkpoint, tmp_path_factory) -> Path:
    """``fastvit embed FOLDER --out emb.npy`` run in one go (in this process)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "emb.npy"
    command = ["embed", str(photos[0]), "--out", str(out), "--checkpoint", str(checkpoint), "--quiet", *JOB_FLAGS]
    assert main(command) == 0
    return out


def assert_same_outputs(out: Path, reference: Path, atol: float = 0.0) -> None:
    for name in ("paths.csv", "errors.csv"):
        assert (out.parent / f"emb.{name}").read_text() == (reference.parent / f"emb.{name}").read_text()
    np.testing.assert_allclose(np.load(out), np.load(reference), rtol=0, atol=atol)


def test_sigkilled_run_resumes_to_the_uninterrupted_output(photos, checkpoint, uninterrupted, tmp_path, capsys):
    folder, good, bad = photos
    out = tmp_path / "emb.npy"
    command = ["embed", str(folder), "--out", str(out), "--checkpoint", str(checkpoint), *JOB_FLAGS]
    parts = tmp_path / "emb.parts"
    process = subprocess.Popen([sys.executable, "-m", "fastvit", *command], cwd=ROOT)
    deadline = time.monotonic() + 90
    while len(list(parts.glob("chunk-*.npz"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    committed = len(list(parts.glob("chunk-*.npz")))
    assert 3 <= committed < (len(good) + len(bad)) // 2 and not out.exists()

    code, stdout, _ = run(capsys, *command)

    assert code == 0 and "inputs were done by an earlier run" in stdout
    assert_same_outputs(out, uninterrupted)  # bit for bit
    rows = read_csv(tmp_path / "emb.paths.csv")[1:]
    assert [path for (path,) in rows] == good  # no row lost, none twice
    assert [path for path, _ in read_csv(tmp_path / "emb.errors.csv")[1:]] == bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.errors.csv", "emb.job.json", "emb.npy", "emb.paths.csv"]


def test_sigterm_stops_a_job_in_one_line_and_it_resumes(photos, checkpoint, uninterrupted, tmp_path, capsys):
    """SIGTERM (a scheduler's stop) ends the run as Ctrl-C does: one line, exit 143, nothing half-written."""
    out = tmp_path / "emb.npy"
    command = ["embed", str(photos[0]), "--out", str(out), "--checkpoint", str(checkpoint), *JOB_FLAGS]
    process = subprocess.Popen([sys.executable, "-m", "fastvit", *command], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list((tmp_path / "emb.parts").glob("chunk-*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert process.stderr.read() == "fastvit embed: terminated\n"
    assert not [p for p in (tmp_path / "emb.parts").iterdir() if p.name.endswith(".tmp")]
    assert run(capsys, *command)[0] == 0
    assert_same_outputs(out, uninterrupted)


def test_two_torchrun_processes_give_the_rows_of_one(photos, checkpoint, uninterrupted, tmp_path):
    out = tmp_path / "emb.npy"
    done = run_process(
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "fastvit", "embed", photos[0], "--out", out, "--checkpoint", checkpoint, *JOB_FLAGS,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports
    assert_same_outputs(out, uninterrupted, atol=1e-5)
    assert json.loads((tmp_path / "emb.job.json").read_text())["skipped"] == len(BAD_FILES)


# ----------------------------------------------------------------------------------------------
# The benchmark command
# ----------------------------------------------------------------------------------------------


def test_benchmark_runs_each_path_in_its_own_worker_and_checks_it_against_the_fused_model(capsys, tmp_path):
    results = tmp_path / "bench.json"
    code, out, _ = run(capsys, "benchmark", "fastvit_t8", "--paths", "channels_last", "default",
                       "--batch-sizes", "1", "2", "--rounds", "1", "--input-size", "64", "64", "--json", results)
    assert code == 0
    assert "native bf16 in oneDNN" in out and "matmul (torch.mm" in out  # the CPU and its peaks
    rows = [line for line in out.splitlines() if line.startswith("| ") and "fastvit" in line]
    assert len(rows) == 3, rows  # the fused reference always runs
    measured = json.loads(results.read_text())["paths"]
    for key in ("eager", "channels_last", "default"):
        path = measured[key]
        assert not path["error"], path["error"]
        assert path["batch_ms"]["1"] and path["batch_ms"]["2"]
    for key in ("channels_last", "default"):
        assert measured[key]["max_abs_diff"] < 1e-5


def test_benchmark_checks_bf16_without_native_kernels_on_the_reference_images(tmp_path):
    """Where bf16 is not native, the benchmark still times it, checked on one image: which was not
    the reference's first image, so its difference from fp32 read 0.44 instead of 0.01."""
    results = tmp_path / "bench.json"
    no_bf16 = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-m", "fastvit", "benchmark", "fastvit_t8", "--paths", "bf16",
                           "--batch-sizes", "1", "--rounds", "1", "--input-size", "64", "64", "--json", str(results)],
                          capture_output=True, text=True, env=no_bf16, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    measured = json.loads(results.read_text())
    assert not measured["bf16_native"] and "not native" in done.stdout
    assert 0 < measured["paths"]["bf16"]["max_abs_diff"] < 0.05
