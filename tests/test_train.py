"""``fastvit train`` and ``fastvit validate`` on real images (scikit-learn's digits): the data layouts
and their one-line errors, the run's files, a run killed with SIGKILL and resumed, two gloo processes,
validation against a plain eval loop, and the weights a run writes used by predict and export."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import fastvit
from fastvit.cli import main
from fastvit.data.augment import RAND_AUGMENT_OPS, RandAugment, RandomErasing, augment_op
from fastvit.errors import FastViTError
from fastvit.runtime.precision import bf16_is_native
from fastvit.train.config import TrainConfig
from fastvit.train.datasets import find_training_data
from fastvit.train.loop import ALONE_IN_ITS_BATCH, Learner
from fastvit.train.recipe import MixupCutmix, ModelEma, WarmupCosine, layer_ids, parameter_groups

from digits import write_digits
from photo_folders import read_csv
from test_weights import T8_REPO, hub_cache, safetensors_bytes, write_hub_repo  # noqa: F401, F811 (a fixture)

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # of the digit PNGs
INPUT = 32  # the input size the tests train at: the network's total stride, and 4 times the scans' pixels
MODEL = ["--model", "fastvit_t8", "--no-pretrained", "--input-size", str(INPUT), str(INPUT)]
FAST = [*MODEL, "--batch-size", "8", "--hflip", "0", "--workers", "0", "--quiet"]
"""fastvit_t8 from random weights at 32 x 32, the flags every test run shares."""


def image_folder(root: Path, classes: int = 3, train: int = 8, val: int = 4) -> Path:
    """``root/train/<digit>/`` and ``root/val/<digit>/`` of digit PNGs (different scans in each)."""
    seen: dict[str, int] = {}
    for path in write_digits(root / "all", SIZE, train + val, classes):
        seen[path.parent.name] = seen.get(path.parent.name, 0) + 1
        target = root / ("train" if seen[path.parent.name] <= train else "val") / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    shutil.rmtree(root / "all")
    return root


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
"""The environment of the training processes: batches of 8 images of 32 x 32 gain nothing from a
second thread, and lose much when another process (a decoding worker) holds a core."""


def run_process(*args, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=ONE_THREAD)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The runs in this process train on one thread too (see ONE_THREAD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def eval_loop(model: torch.nn.Module, folder: Path, targets: dict[str, int]) -> dict:
    """Top-1, top-5 and loss of ``model.eval()`` on ``folder/<class>/*``, one image at a time."""
    transform = fastvit.create_transform(**fastvit.resolve_data_config(model=model))
    logits, labels = [], []
    with torch.inference_mode():
        for name, target in targets.items():
            for path in sorted((folder / name).iterdir()):
                logits.append(model.eval()(transform(fastvit.load_image(path)).unsqueeze(0))[0])
                labels.append(target)
    logits, labels = torch.stack(logits), torch.tensor(labels)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return {
        "top1": 100 * float((logits.argmax(1) == labels).double().mean()),
        "top5": 100 * float((top5 == labels.unsqueeze(1)).any(1).double().mean()),
        "loss": float(F.cross_entropy(logits.double(), labels)),
        "predicted": logits.argmax(1),
    }


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """An ImageFolder of 3 digit classes (8 train and 4 val images each) with two bad files."""
    root = image_folder(tmp_path_factory.mktemp("digits"))
    (root / "train" / "0" / "notes.png").write_text("not an image\n")
    png = (root / "train" / "1").iterdir().__next__().read_bytes()
    (root / "train" / "1" / "truncated.png").write_bytes(png[: len(png) // 2])
    return root


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> Path:
    """A 2-epoch run on ``digits`` (in this process)."""
    run = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", str(digits), "--out", str(run), "--epochs", "2", *FAST]) == 0
    return run


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------


def test_parameter_groups_skip_decay_on_norms_biases_and_layer_scales():
    model = fastvit.create_model("fastvit_sa12", num_classes=3)
    names = {id(param): name for name, param in model.named_parameters()}
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.5)
    undecayed = {names[id(p)] for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    assert {"stem.0.conv_kxk.0.bn.weight", "head.fc.bias", "stages.0.blocks.0.layer_scale.gamma",
            "stages.3.blocks.0.layer_scale_1.gamma", "stages.0.blocks.0.token_mixer.layer_scale.gamma"} <= undecayed
    assert "head.fc.weight" not in undecayed and "stages.3.blocks.0.mlp.fc1.weight" not in undecayed
    assert sum(len(group["params"]) for group in groups) == len(names)
    depth = layer_ids(model)
    assert depth["stem.0.conv_kxk.0.conv.weight"] == 0
    assert depth["stages.0.blocks.0.mlp.fc1.weight"] < depth["stages.0.blocks.1.mlp.fc1.weight"]
    assert depth["stages.1.downsample.proj.0.large_conv.conv.weight"] == depth["stages.1.blocks.0.mlp.fc1.weight"]
    assert depth["head.fc.weight"] == depth["final_conv.se.fc1.weight"] == max(depth.values())
    scale = {names[id(p)]: group["lr_scale"] for group in groups for p in group["params"]}
    assert scale["head.fc.weight"] == 1.0 and scale["stem.0.conv_kxk.0.conv.weight"] == 0.5 ** max(depth.values())


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(lr=1e-3, total_steps=110, warmup_steps=10, min_lr=1e-5)
    assert [schedule(step) for step in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    assert schedule(60) == pytest.approx((1e-3 + 1e-5) / 2) and schedule(110) == pytest.approx(1e-5)


def test_mixup_and_cutmix_mix_targets_as_the_images():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    labels = torch.tensor([0, 1, 2, 3])
    mixup = MixupCutmix(num_classes=4, mixup_alpha=0.8, smoothing=0.0)
    mixed, targets = mixup(images.clone(), labels, np.random.default_rng(0))
    factor = float(targets[0, 0])
    torch.testing.assert_close(mixed[0], torch.full((3, 8, 8), 3 * (1 - factor)))
    assert targets.sum(1).tolist() == pytest.approx([1.0] * 4)
    cutmix = MixupCutmix(num_classes=4, cutmix_alpha=1.0, smoothing=0.1)
    mixed, targets = cutmix(images.clone(), labels, np.random.default_rng(1))
    pasted = float((mixed[0] == 3).double().mean())
    assert 0 < pasted < 1 and float(targets[0, 3]) == pytest.approx(0.1 / 4 + 0.9 * pasted)


def test_cutmix_box_puts_an_odd_sides_extra_pixel_after_the_centre():
    """timm's rand_bbox spans [c - cut // 2, c + (cut + 1) // 2): a 15-pixel cut is 15 pixels wide
    (it was 14, and a 1-pixel cut pasted nothing)."""

    class Centre:  # the generator's draws: the centre of a 32 x 32 image
        def integers(self, low, high):
            return 16

    assert MixupCutmix._box(torch.Size([32, 32]), 1 - (15.5 / 32) ** 2, Centre()) == (9, 24, 9, 24)
    assert MixupCutmix._box(torch.Size([32, 32]), 1 - (1.5 / 32) ** 2, Centre()) == (16, 17, 16, 17)


def test_ema_follows_the_weights_with_warmup():
    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.99)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1)
    decay = 2 / 11  # min(0.99, (1 + step) / (10 + step))
    torch.testing.assert_close(ema.module.weight, decay * before + (1 - decay) * model.weight)


def test_random_erasing_fills_one_box_within_the_area_range():
    generator = torch.Generator().manual_seed(0)
    erase = RandomErasing(p=1.0, mode="const", generator=generator)
    image = torch.ones(3, 40, 40)
    for _ in range(20):
        erased = erase(image)
        area = float((erased == 0).all(0).double().mean())
        assert 0.02 - 1e-3 <= area <= 1 / 3 + 1e-3 and torch.equal(image, torch.ones(3, 40, 40))
    transform = fastvit.create_transform(32, is_training=True, re_prob=1.0, re_mode="pixel", generator=generator)
    assert isinstance(transform.transforms[-1], RandomErasing) and transform.transforms[-1].mode == "pixel"


def test_rand_augment_ops_and_configs_equal_timms():
    """Each op at fixed magnitude and sign against timm's (scripts/make_golden_augment.py); the
    random draws themselves come from another generator and are not compared."""
    golden = np.load(ROOT / "tests" / "golden" / "augment.npz")
    image = Image.fromarray(golden["image"])
    unsigned = [key.split("/")[1:3] for key in golden.files if key.startswith("op/") and key.endswith("/0")]
    assert {name for name, _ in unsigned} == set(RAND_AUGMENT_OPS[False]) | set(RAND_AUGMENT_OPS[True])
    for name, magnitude in unsigned:
        for negate in (False, True):
            key = f"op/{name}/{magnitude}/{int(negate)}"
            expected = golden[key if key in golden.files else f"op/{name}/{magnitude}/0"]
            got = augment_op(name, image, float(magnitude), negate, fill=(124, 116, 104), resample="bicubic")
            np.testing.assert_array_equal(np.asarray(got), expected, err_msg=key)
    for config, timm in json.loads(str(golden["configs"])).items():
        ours = RandAugment.from_config(config)
        assert list(ours.ops) == timm["ops"] and ours.num_layers == timm["num_layers"], config
        assert (ours.prob, ours.magnitude) == (timm["prob"], timm["magnitude"]), config
        assert ours.magnitude_std == timm["magnitude_std"], config
        assert ours.magnitude_max == (timm["magnitude_max"] or 10)
    transform = fastvit.create_transform(64, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", mean=(0.5,) * 3)
    steps = [type(step).__name__ for step in transform.transforms]
    assert steps == ["ToRGB", "RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor", "Normalize"]
    assert transform.transforms[3].fill == (128, 128, 128)


def test_posterize_beyond_magnitude_ten_keeps_all_or_no_bits():
    """With --aa ...-mmax20, posterize asks for more than 8 or fewer than 0 bits, which Pillow
    refuses: timm returns the image from 8 bits up, and old Pillow gave black below 0."""
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    assert augment_op("Posterize", image, 20.0) is image
    assert not np.asarray(augment_op("PosterizeIncreasing", image, 15.0)).any()


def test_recipe_options_train(digits, tmp_path, capsys):
    """EMA, mixup and cutmix, layer decay, accumulation, clipping, RandAugment, random erasing,
    gradient checkpointing (and bf16 with channels-last where the CPU has bf16) together: the run
    trains, and validates the EMA weights it saves."""
    run = tmp_path / "options"
    bf16 = ["--precision", "bf16", "--channels-last"] if bf16_is_native() else []
    code, _, err = run_cli(capsys, "train", digits, "--out", run, "--epochs", "1", *FAST, *bf16, "--model-ema",
                           "--model-ema-decay", "0.9", "--mixup", "0.8", "--cutmix", "1.0", "--layer-decay", "0.75",
                           "--grad-accum", "2", "--clip-grad", "1.0", "--aa", "rand-m9-mstd0.5-inc1",
                           "--reprob", "0.25", "--decode", "fast",
                           "--grad-checkpointing", "--drop-path", "0.1")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["decode"] == "fast"
    (record,) = metrics(run)
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 2 and "model_ema" in state  # 3 batches of 8 (+ a short one dropped), 2 per step
    ema = fastvit.create_model("fastvit_t8", checkpoint_path=run / "best.safetensors")
    reference = eval_loop(ema, digits / "val", {"0": 0, "1": 1, "2": 2})
    assert reference["loss"] == pytest.approx(record["val_loss"], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Data layouts and their errors
# ----------------------------------------------------------------------------------------------


def test_val_split_is_stratified_and_seeded(tmp_path):
    write_digits(tmp_path / "digits", SIZE, per_class=10, classes=3)
    data = find_training_data(str(tmp_path / "digits"), val_split=0.2, input_size=(SIZE, SIZE))
    assert data.classes == ("0", "1", "2") and len(data.train) == 24 and len(data.val) == 6
    assert sorted(data.val.labels) == [0, 0, 1, 1, 2, 2] and not set(data.train.paths) & set(data.val.paths)
    again = find_training_data(str(tmp_path / "digits"), val_split=0.2, input_size=(SIZE, SIZE))
    other = find_training_data(str(tmp_path / "digits"), val_split=0.2, seed=1, input_size=(SIZE, SIZE))
    assert again == data and other.val != data.val


def test_csv_lists(digits, tmp_path):
    rows = [f"{path.relative_to(digits)},digit {path.parent.name}" for path in sorted(digits.glob("train/*/0*.png"))]
    (digits / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    val_rows = [f"{path},digit {path.parent.name}" for path in sorted(digits.glob("val/*/*.png"))]
    (tmp_path / "val.csv").write_text("\n".join(val_rows) + "\n")
    data = find_training_data(None, train_list=str(digits / "train.csv"), val_list=str(tmp_path / "val.csv"),
                              input_size=(SIZE, SIZE))
    assert data.classes == ("digit 0", "digit 1", "digit 2")
    assert len(data.train) == 24 and len(data.val) == 12 and data.val.labels == (0,) * 4 + (1,) * 4 + (2,) * 4
    assert data.train.paths[0] == str(sorted(digits.glob("train/0/0*.png"))[0])


def _layouts(root: Path) -> dict[str, tuple[list[str], str]]:
    """Broken data -> (train arguments, the start of the error message)."""
    write_digits(root / "one" / "train", SIZE, per_class=3, classes=1)
    write_digits(root / "one" / "val", SIZE, per_class=1, classes=1)
    write_digits(root / "extra" / "train", SIZE, per_class=3, classes=2)
    write_digits(root / "extra" / "val", SIZE, per_class=1, classes=3)
    (root / "empty" / "train" / "cat").mkdir(parents=True)
    write_digits(root / "small", 3, per_class=3, classes=2)
    return {
        "missing folder": ([str(root / "missing"), "--val-split", "0.2"], f"no such folder: {root / 'missing'}"),
        "missing folder, no split": ([str(root / "missing")], f"no such folder: {root / 'missing'}"),
        "no train folder": ([str(root / "empty" / "train" / "cat")],
                            f"{root / 'empty' / 'train' / 'cat'} has no train/"),
        "no images": ([str(root / "empty")], f"no images in {root / 'empty' / 'train'}"),
        "one class": ([str(root / "one")], f"{root / 'one'} has one class ('0')"),
        "unknown val class": ([str(root / "extra")], f"{root / 'extra' / 'val'}/2: class '2' has no training images"),
        "too small": ([str(root / "small"), "--val-split", "0.4"], f"{root / 'small'}/0/"),
    }


@pytest.mark.parametrize("option", [
    {"batch_size": 0}, {"grad_accum": 0}, {"epochs": -1}, {"lr": -1}, {"lr": 0}, {"label_smoothing": 2},
    {"input_size": (0, 0)}, {"scale": (1.0, 0.5)}, {"mixup": -1}, {"model_ema_decay": 2.0}, {"warmup_epochs": -1},
    {"workers": -1}, {"val_split": 1.0}, {"epochs": 2.5},
])
def test_train_config_refuses_what_cannot_train(option, tmp_path):
    """The API checks what the CLI's parser checks, before a run starts (these used to fail deep in torch
    or PIL, or train a distorted schedule)."""
    with pytest.raises(FastViTError, match=next(iter(option))):
        TrainConfig(out=str(tmp_path / "run"), data="digits", **option)


def test_an_image_left_alone_in_its_batch_at_a_one_pixel_last_map(digits, tmp_path, capsys):
    """At 32 x 32 the last map is one pixel, and BatchNorm cannot train on one image: a batch that
    unreadable files leave with one image is skipped and listed, where it used to end the run."""
    data = tmp_path / "data"
    for split, good, truncated in (("train", 2, 6), ("val", 1, 0)):
        for name, source in (("a", "0"), ("b", "1")):
            folder = data / split / name
            folder.mkdir(parents=True)
            images = sorted((digits / "train" / source).glob("*.png"))
            for i, image in enumerate(images[:good]):
                shutil.copy(image, folder / f"good{i}.png")
            for i, image in enumerate(images[good : good + truncated]):
                (folder / f"cut{i}.png").write_bytes(image.read_bytes()[:120])  # the header reads, the pixels do not
    code, _, err = run_cli(capsys, "train", data, "--out", tmp_path / "run", "--epochs", "2",
                           *[flag if flag != "8" else "2" for flag in FAST])
    assert code == 0, err
    reasons = [row[1] for row in read_csv(tmp_path / "run" / "errors.csv")[1:]]
    assert ALONE_IN_ITS_BATCH in reasons


def test_no_accumulated_gradient_carries_into_the_next_epoch(tmp_path):
    """With --grad-accum, an epoch whose last batch could not be read ended with gradients pending,
    which last.pt does not hold: a resumed run then differed from an uninterrupted one."""
    model = fastvit.create_model("fastvit_t8", num_classes=2)
    config = TrainConfig(out=str(tmp_path), grad_accum=2)
    learner = Learner(model, model, config, total_steps=4, warmup_steps=0, device=torch.device("cpu"))
    learner.learn(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert (learner.step, learner.pending) == (0, 1)
    learner.finish_epoch()
    assert (learner.step, learner.pending) == (1, 0) and all(p.grad is None for p in model.parameters())


def test_the_epochs_last_short_accumulation_steps_on_the_mean_gradient(tmp_path, monkeypatch):
    """With --grad-accum 3 and one batch left, the step used 1/3 of that batch's gradient; timm's
    train.py divides the last group's losses by the number of batches it really has."""
    torch.manual_seed(0)
    model = fastvit.create_model("fastvit_t8", num_classes=2)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    config = TrainConfig(out=str(tmp_path), grad_accum=3)
    F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    learner = Learner(model, model, config, total_steps=4, warmup_steps=0, device=torch.device("cpu"))
    stepped = []
    monkeypatch.setattr(learner, "_step", lambda: stepped.append([p.grad.clone() for p in model.parameters()]))
    learner.learn(x, y, remaining=1)
    assert len(stepped) == 1
    assert all(torch.allclose(got, want, atol=1e-7) for got, want in zip(stepped[0], expected))


def test_bad_data_fails_in_one_line(tmp_path, capsys):
    for case, (arguments, message) in _layouts(tmp_path).items():
        code, out, err = run_cli(capsys, "train", *arguments, "--out", tmp_path / "run", *FAST)
        assert code == 2 and out == "" and err.count("\n") == 1, (case, err)
        assert err.startswith(f"fastvit train: error: {message}"), (case, err)
    assert "is too small to crop (3x3 pixels; at input size 32x32 an image needs at least 4x4" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_strict_stops_at_the_first_bad_file(digits, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", digits, "--out", tmp_path / "run", "--strict", *FAST)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("fastvit train: error: cannot load image ") and "notes.png" in err


# ----------------------------------------------------------------------------------------------
# A run's files
# ----------------------------------------------------------------------------------------------


def test_run_files(trained, digits):
    assert sorted(path.name for path in trained.iterdir()) == [
        "best.safetensors", "classes.txt", "config.json", "errors.csv", "fused.safetensors", "last.pt",
        "metrics.jsonl", "metrics.png", "val.csv",
    ]
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in trained.iterdir())  # readable by the team
    listed = [[str(path), path.parent.name] for path in sorted(digits.glob("val/*/*"))]
    assert read_csv(trained / "val.csv")[1:] == listed
    assert (trained / "classes.txt").read_text() == "0\n1\n2\n"
    records = metrics(trained)
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) == {"epoch", "lr", "train_loss", "val_loss", "top1", "top5", "images_per_second", "seconds"}
    errors = {Path(path).name: reason for path, reason in read_csv(trained / "errors.csv")[1:]}
    assert errors["notes.png"] == "not an image format Pillow can read" and "truncated" in errors["truncated.png"]
    config = json.loads((trained / "config.json").read_text())
    assert config["data"] == str(digits) and config["epochs"] == 2 and config["input_size"] == [INPUT, INPUT]
    assert Image.open(trained / "metrics.png").size[0] > 500
    state = torch.load(trained / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["classes"] == ["0", "1", "2"] and "optimizer" in state and state["rng"]
    best = max(records, key=lambda r: r["top1"])  # the first of equals
    model = fastvit.create_model("fastvit_t8", checkpoint_path=trained / "best.safetensors")
    assert model.num_classes == 3 and model.pretrained_cfg["label_names"] == ("0", "1", "2")
    assert model.pretrained_cfg["input_size"] == (3, INPUT, INPUT)
    reference = eval_loop(model, digits / "val", {"0": 0, "1": 1, "2": 2})
    assert reference["top1"] == pytest.approx(best["top1"])
    assert reference["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    fused = fastvit.create_model("fastvit_t8", checkpoint_path=trained / "fused.safetensors")
    x = torch.randn(2, 3, INPUT, INPUT)
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load")  # deprecated in torch 2.13, still what many deploy with
def test_predict_and_export_take_the_run_weights(trained, digits, tmp_path, capsys):
    image = sorted((digits / "val" / "2").iterdir())[0]
    for weights in ("best.safetensors", "fused.safetensors"):
        code, out, err = run_cli(capsys, "predict", image, "--checkpoint", trained / weights, "--top-k", "3", "--json")
        assert code == 0, err
        labels = [entry["label"] for entry in json.loads(out)["top_k"]]
        assert sorted(labels) == ["0", "1", "2"]
    code, out, err = run_cli(capsys, "export", "fastvit_t8", "--checkpoint", trained / "fused.safetensors",
                             "--format", "torchscript", "--out", tmp_path / "digits.pt")
    assert code == 0, err
    exported = torch.jit.load(tmp_path / "digits.pt")
    model = fastvit.create_model("fastvit_t8", checkpoint_path=trained / "best.safetensors").eval()
    x = torch.randn(1, 3, INPUT, INPUT)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)


def test_pretrained_backbone_from_the_hub_cache_with_a_frozen_backbone(hub_cache, digits, tmp_path, capsys):  # noqa: F811
    weights = fastvit.create_model("fastvit_t8").state_dict()
    write_hub_repo(hub_cache, T8_REPO, {"model.safetensors": safetensors_bytes(weights)})
    run = tmp_path / "probe"
    code, _, err = run_cli(capsys, "train", digits, "--out", run, "--freeze-backbone", "--epochs", "1",
                           "--input-size", str(INPUT), str(INPUT), "--batch-size", "8", "--workers", "0", "--quiet")
    assert code == 0, err
    trained = load_file(run / "best.safetensors")
    assert all(torch.equal(trained[key], value) for key, value in weights.items() if not key.startswith("head."))
    assert trained["head.fc.weight"].shape == (3, 768)
    assert json.loads((run / "config.json").read_text())["model"] == "fastvit_t8.apple_in1k"


# ----------------------------------------------------------------------------------------------
# Killed and resumed; two processes
# ----------------------------------------------------------------------------------------------


def test_sigkilled_run_resumes_to_the_uninterrupted_one(digits, tmp_path):
    """Weights and metrics bit for bit, with decoding workers in the killed and resumed runs only."""
    flags = ["--epochs", "2", "--drop-path", "0.1", *FAST]
    uninterrupted = run_process(sys.executable, "-m", "fastvit", "train", digits, "--out", tmp_path / "one", *flags)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "fastvit", "train", digits, "--out", run, *flags, "--workers", "2"]
    process = subprocess.Popen(command, cwd=ROOT, env=ONE_THREAD)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the metrics are written after last.pt: epoch 1 is saved, epoch 2 has begun
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert len(metrics(run)) == 1

    resumed = run_process(sys.executable, "-m", "fastvit", "train", "--resume", run, "--workers", "1")

    assert resumed.returncode == 0, resumed.stderr
    timing = {"images_per_second", "seconds"}
    strip = lambda records: [{k: v for k, v in r.items() if k not in timing} for r in records]  # noqa: E731
    assert strip(metrics(run)) == strip(metrics(tmp_path / "one"))
    for name in ("best.safetensors", "fused.safetensors"):
        expected, got = load_file(tmp_path / "one" / name), load_file(run / name)
        assert all(torch.equal(got[key], value) for key, value in expected.items()), name
    expected, got = (torch.load(path / "last.pt", weights_only=True) for path in (tmp_path / "one", run))
    assert all(torch.equal(got["model"][key], value) for key, value in expected["model"].items())


def test_resume_refuses_other_classes_or_model(trained, digits, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    code, _, err = run_cli(capsys, "train", "--resume", run, "--model", "fastvit_s12")
    assert code == 2 and err.startswith(f"fastvit train: error: --resume continues {run} with the options")
    assert "--model cannot change" in err
    code, _, err = run_cli(capsys, "train", digits, "--out", run, *FAST)
    assert code == 2 and err == (f"fastvit train: error: {run} holds a run already: continue it with fastvit train "
                                 f"--resume {run}, or choose another --out\n")
    more = tmp_path / "more"
    shutil.copytree(digits, more)
    shutil.copytree(more / "train" / "2", more / "train" / "7")
    described = {name: (run / name).read_bytes() for name in ("classes.txt", "val.csv", "config.json")}
    code, _, err = run_cli(capsys, "train", more, "--resume", run)
    assert code == 2 and err == ("fastvit train: error: the data's classes differ from the run's (new: 7): "
                                 "train a new run with --out\n")
    assert {name: (run / name).read_bytes() for name in described} == described  # refused: nothing rewritten
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "5")
    assert code == 2 and "--epochs cannot change" in err  # not the default, not the run's: refused
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", str(TrainConfig(out=run).epochs))
    assert code == 2 and "--epochs cannot change" in err  # the default typed out is given all the same
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--model", "fastvit_t8")
    assert code == 0, err  # the run's own options, typed out again
    config["model"] = "fastvit_s12"
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "train", "--resume", run)
    assert code == 2 and err == "fastvit train: error: the run was trained with model fastvit_t8, not fastvit_s12\n"


def test_a_run_of_the_default_model_resumes(digits, tmp_path, capsys):
    """Without --model, the run's model name was the parser's default object, which last.pt pickled
    and the weights-only loader then refused: such a run could not be resumed."""
    run = tmp_path / "default"
    flags = [flag for flag in FAST if flag not in ("--model", "fastvit_t8")]
    assert run_cli(capsys, "train", digits, "--out", run, "--epochs", "1", *flags)[0] == 0
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0 and "Traceback" not in err, err


def test_a_run_resumes_without_its_starting_weights(digits, checkpoint, tmp_path, capsys):
    """last.pt holds the weights and the data config: the file the run started from (or the Hub
    cache) is not needed again."""
    start = shutil.copy(checkpoint, tmp_path / "start.safetensors")
    run = tmp_path / "run"
    flags = [flag for flag in FAST if flag != "--no-pretrained"]
    assert run_cli(capsys, "train", digits, "--out", run, "--epochs", "1", "--checkpoint", start, *flags)[0] == 0
    Path(start).unlink()
    code, _, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, err


def test_unreadable_files_that_leave_a_class_or_the_validation_empty(digits, tmp_path, capsys):
    """The class and validation checks look at the images that can be read."""
    for emptied in ("train/2", "val"):
        data = tmp_path / emptied.replace("/", "-")
        shutil.copytree(digits, data)
        for image in (data / emptied).rglob("*.png"):
            image.write_bytes(b"")
        code, _, err = run_cli(capsys, "train", data, "--out", tmp_path / "run", "--epochs", "1", *FAST)
        assert code == 2 and ("class '2'" in err if emptied == "train/2" else "none of the validation images" in err)
        assert not (tmp_path / "run").exists()


def test_two_gloo_processes(digits, tmp_path, capsys):
    run = tmp_path / "ddp"
    done = run_process(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       "-m", "fastvit", "train", digits, "--out", run, "--epochs", "1", *FAST[:-1])  # not --quiet
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 1/1") == 1  # rank 0 reports
    (record,) = metrics(run)
    code, out, err = run_cli(capsys, "validate", digits, "--checkpoint", run / "best.safetensors", "--json",
                             "--workers", "0")
    result = json.loads(out)
    assert code == 0 and result["images"] == 12  # both shards counted once
    assert result["top1"] == pytest.approx(record["top1"])
    assert result["loss"] == pytest.approx(record["val_loss"], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def test_validate_equals_a_plain_eval_loop(trained, digits, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "validate", digits, "--checkpoint", trained / "best.safetensors", "--json",
                             "--out", tmp_path / "report", "--batch-size", "5")
    assert code == 0, err
    result = json.loads(out)
    model = fastvit.create_model("fastvit_t8", checkpoint_path=trained / "best.safetensors")
    reference = eval_loop(model, digits / "val", {"0": 0, "1": 1, "2": 2})
    assert result["images"] == 12 and result["model"] == "fastvit_t8"
    assert result["top1"] == pytest.approx(reference["top1"]) and result["top5"] == pytest.approx(reference["top5"])
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    code, out, _ = run_cli(capsys, "validate", trained / "val.csv", "--checkpoint", trained / "best.safetensors",
                           "--json")
    listed = json.loads(out)
    assert code == 0 and (listed["images"], listed["top1"], listed["top5"]) == (12, result["top1"], result["top5"])
    assert listed["loss"] == pytest.approx(result["loss"], rel=1e-6)  # other batches, other rounding
    confusion = read_csv(tmp_path / "report" / "confusion.csv")
    assert confusion[0] == ["true \\ predicted", "0", "1", "2"]
    expected = torch.zeros(3, 3, dtype=torch.int64)
    ones = torch.ones(12, dtype=torch.int64)
    expected.index_put_((torch.arange(12) // 4, reference["predicted"]), ones, accumulate=True)
    assert [[int(n) for n in row[1:]] for row in confusion[1:]] == expected.tolist()
    per_class = read_csv(tmp_path / "report" / "per_class.csv")
    assert per_class[0] == ["class", "model_index", "model_class", "images", "top1", "top5"]
    assert [float(row[4]) for row in per_class[1:]] == pytest.approx((expected.diag() / 4 * 100).tolist())
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
    code, out, err = run_cli(capsys, "validate", digits, "--checkpoint", trained / "best.safetensors", "--json",
                             "--decode", "fast")
    fast = json.loads(out)
    assert code == 0 and fast["images"] == 12 and fast["top1"] == result["top1"], err
    assert fast["loss"] == pytest.approx(result["loss"], rel=0.05)  # resized by torch, not Pillow
    monkeypatch.setenv("FASTVIT_CACHE", str(tmp_path / "cache"))
    for backend in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(backend) is None:
            continue
        code, out, err = run_cli(capsys, "validate", digits, "--checkpoint", trained / "best.safetensors", "--json",
                                 "--backend", backend)
        other = json.loads(out)
        assert code == 0 and (other["images"], other["top1"], other["top5"]) == (12, result["top1"], result["top5"])
        assert other["loss"] == pytest.approx(result["loss"], rel=1e-5), backend


def test_synset_folders_are_imagenet_classes(checkpoint, tmp_path, capsys):
    photos = sorted((ROOT / "tests" / "images").iterdir())[:2]
    synsets = {"n02123045": 281, "n07930864": 968}  # tabby, cup (the indices of timm's ImageNet-1k head)
    for (synset, _), photo in zip(synsets.items(), photos):
        (tmp_path / "val" / synset).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "val" / synset / photo.name)
    code, out, err = run_cli(capsys, "validate", tmp_path, "--checkpoint", checkpoint, "--json", "--workers", "0")
    assert code == 0, err
    result = json.loads(out)
    model = fastvit.create_model("fastvit_t8", checkpoint_path=checkpoint)
    reference = eval_loop(model, tmp_path / "val", synsets)
    assert (result["top1"], result["top5"]) == pytest.approx((reference["top1"], reference["top5"]))
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    (tmp_path / "val" / "tabby").mkdir()
    shutil.copy(photos[0], tmp_path / "val" / "tabby")
    code, _, err = run_cli(capsys, "validate", tmp_path, "--checkpoint", checkpoint)
    assert code == 2 and err.startswith("fastvit validate: error: folder 'tabby' is not an ImageNet-1k synset id")
