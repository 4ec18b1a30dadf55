"""Training and validation speed, each against its peer in one interleaved run, printed as ratios.

* training: the optimizer step of ``fastvit train`` (:class:`fastvit.train.loop.Learner`) against
  timm's ``train.py`` recipe (``create_optimizer_v2('adamw')``, ``LabelSmoothingCrossEntropy``,
  the cosine scheduler stepped per update, ``ModelEmaV3`` with ``--model-ema``, autocast with
  ``--precision bf16``) run by timm in its own interpreter: same model, batch, input size, threads
  and recipe, on the same in-memory batch (``--bf16-too`` adds our step in bf16 autocast with
  channels-last). Each side is a worker process; rounds alternate between them. Memory: each
  worker's peak RSS, and its growth from the start of training (model and optimizer built, nothing
  run) to the peak; medians over ``--memory-samples`` processes per side, as RSS peaks vary by
  some per cent between identical processes.
* validation: ``fastvit validate``'s path (:func:`fastvit.train.validate.validate_folder`, the
  Predictor) against a plain ``model.eval()`` loop over the same folder and the same loader.

Random weights: speed does not depend on them, and nothing is downloaded.

    python benchmarks/train.py --timm-python /tmp/ref/bin/python --model fastvit_t8 --batch-size 32 \\
        --input-size 128 128 --steps 8 --rounds 4 --bf16-too
"""

from __future__ import annotations

import argparse
import copy
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NUM_CLASSES = 10
LR, WEIGHT_DECAY, SMOOTHING, WARMUP_STEPS, TOTAL_STEPS = 5e-4, 0.05, 0.1, 5, 1000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _our_step(args: argparse.Namespace):
    import torch

    import fastvit
    from fastvit.train.config import TrainConfig
    from fastvit.train.loop import Learner

    model = fastvit.create_model(args.model, num_classes=NUM_CLASSES).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    config = TrainConfig(out="", lr=LR, weight_decay=WEIGHT_DECAY, label_smoothing=SMOOTHING,
                         precision=args.precision, model_ema=args.model_ema, channels_last=args.channels_last)
    learner = Learner(model, model, config, TOTAL_STEPS, WARMUP_STEPS, torch.device("cpu"))
    return lambda images, labels: learner.learn(images, labels)


def _timm_step(args: argparse.Namespace):
    """One update of timm's train.py ``train_one_epoch`` (no prefetcher, no mixup, no clipping)."""
    import contextlib
    from functools import partial

    import timm
    import torch
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    model = timm.create_model(args.model, num_classes=NUM_CLASSES).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=TOTAL_STEPS, warmup_epochs=WARMUP_STEPS,
                                       step_on_epochs=False, updates_per_epoch=1)
    loss_fn = LabelSmoothingCrossEntropy(smoothing=SMOOTHING)
    ema = ModelEmaV3(model, decay=0.9998) if args.model_ema else None
    bf16 = args.precision == "bf16"
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext
    updates = 0

    def step(images, labels):
        nonlocal updates
        with autocast():
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        value = loss.item()
        updates += 1
        optimizer.zero_grad()
        if ema is not None:
            ema.update(model, step=updates)
        scheduler.step_update(num_updates=updates, metric=value)
        return value

    return step


def worker(args: argparse.Namespace) -> None:
    """Build one side, then answer 'run N' with the seconds N steps took and 'peak' with memory."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = args.input_size
    images = torch.randn(args.batch_size, 3, height, width)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,))
    step = _our_step(args) if args.worker == "ours" else _timm_step(args)
    start_rss = _rss_bytes()
    step(images, labels)  # warm-up: optimizer state, oneDNN primitives
    print("ready", flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "run":
            started = time.perf_counter()
            for _ in range(int(rest[0])):
                step(images, labels)
            print(time.perf_counter() - started, flush=True)
        elif command == "peak":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(peak, peak - start_rss, flush=True)
            return


@dataclass(frozen=True)
class Side:
    """One worker of the comparison: whose recipe, in which interpreter, at which precision."""

    name: str
    python: str
    worker: str  # "ours" or "timm"
    precision: str
    channels_last: bool

    def start(self, args: argparse.Namespace) -> subprocess.Popen:
        command = [self.python, __file__, "--worker", self.worker, "--model", args.model,
                   "--batch-size", str(args.batch_size), "--input-size", *map(str, args.input_size),
                   "--threads", str(args.threads), "--precision", self.precision]
        command += ["--channels-last"] * self.channels_last + ["--model-ema"] * args.model_ema
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {self.name} worker failed to start")
        return process


def _ask(process: subprocess.Popen, command: str) -> list[str]:
    process.stdin.write(command + "\n")
    process.stdin.flush()
    return process.stdout.readline().split()


def _sides(args: argparse.Namespace) -> list[Side]:
    label = f"{args.precision}{' channels-last' if args.channels_last else ''}"
    sides = [Side(f"fastvit train, {label}", sys.executable, "ours", args.precision, args.channels_last),
             Side(f"timm train.py, {label}", args.timm_python, "timm", args.precision, args.channels_last)]
    if args.bf16_too:
        sides.append(Side("fastvit train, bf16 channels-last", sys.executable, "ours", "bf16", True))
    return sides


def compare_training(args: argparse.Namespace) -> None:
    sides = _sides(args)
    processes = [side.start(args) for side in sides]
    speeds: list[list[float]] = [[] for _ in sides]
    for _ in range(args.rounds):
        for process, speed in zip(processes, speeds):
            speed.append(args.steps * args.batch_size / float(_ask(process, f"run {args.steps}")[0]))
    samples = [[[int(value) for value in _ask(process, "peak")]] for process in processes]
    for process in processes:
        process.wait()
    for _ in range(args.memory_samples - 1):  # RSS peaks vary by some per cent from process to process
        for side, sample in zip(sides, samples):
            process = side.start(args)
            _ask(process, "run 2")
            sample.append([int(value) for value in _ask(process, "peak")])
            process.wait()
    memory = [[_median([peaks[i] for peaks in sample]) for i in (0, 1)] for sample in samples]
    median = [_median(speed) for speed in speeds]
    print(f"\ntraining step: {args.model}, batch {args.batch_size}, {args.input_size[0]}x{args.input_size[1]}, "
          f"{args.threads} threads{', EMA' if args.model_ema else ''}; AdamW, label smoothing 0.1, cosine schedule; "
          f"{args.rounds} rounds of {args.steps} steps; memory: medians of {args.memory_samples} processes per side")
    print("| recipe | images/s (median) | x timm | peak RSS (MiB) | x timm | growth in training (MiB) | x timm |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for side, speed, (peak, growth) in zip(sides, median, memory):
        print(f"| {side.name} | {speed:.1f} | {speed / median[1]:.2f} | {peak / 2**20:.0f} | {peak / memory[1][0]:.2f} "
              f"| {growth / 2**20:.0f} | {growth / memory[1][1]:.2f} |")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def compare_validation(args: argparse.Namespace) -> None:
    import torch

    import fastvit
    from fastvit.data import create_transform, resolve_data_config, split_per_batch
    from fastvit.runtime.devices import Ranks
    from fastvit.train.batches import EpochOrder, LabelledImages, make_loader
    from fastvit.train.datasets import find_validation_data
    from fastvit.train.validate import evaluate, validate_folder

    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import make_photos

    torch.set_num_threads(args.threads)
    model = fastvit.create_model(args.model, num_classes=2).eval()
    with tempfile.TemporaryDirectory() as folder:
        for name, seed in (("a", 0), ("b", 1)):
            (Path(folder) / name).mkdir()
            make_photos(Path(folder) / name, args.val_images // 2, seed=seed, sides=(256, 512))
        classes, split = find_validation_data(folder)
        per_image, to_float = split_per_batch(create_transform(**resolve_data_config(model=model)))

        def plain_loop() -> float:
            loader = make_loader(LabelledImages(split, per_image), EpochOrder(len(split), 0, Ranks(), False, False),
                                 args.val_batch_size, args.workers, pin_memory=False)
            return evaluate(model, loader, range(2), 2, to_float).images_per_second

        def predictor() -> float:
            result = validate_folder(copy.deepcopy(model), folder, batch_size=args.val_batch_size, workers=args.workers)
            return result.evaluation.images_per_second

        speeds: dict[str, list[float]] = {"fastvit validate (Predictor)": [], "plain model.eval() loop": []}
        for _ in range(args.rounds):
            speeds["fastvit validate (Predictor)"].append(predictor())
            speeds["plain model.eval() loop"].append(plain_loop())
    median = {name: _median(values) for name, values in speeds.items()}
    plain = median["plain model.eval() loop"]
    print(f"\nvalidation: {args.model}, {len(split)} JPEGs of 256-512 px in {len(classes)} class folders, "
          f"batch {args.val_batch_size}, {args.workers} decoding workers, {args.threads} threads; {args.rounds} rounds")
    print("| path | images/s (median) | x plain loop |")
    print("|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {value / plain:.2f} |")


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastvit_t8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--model-ema", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="training steps per round and side")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--bf16-too", action="store_true",
                        help="also time our step in bf16 autocast with channels-last, in the same rounds")
    parser.add_argument("--memory-samples", type=int, default=3, help="processes per side measuring memory")
    parser.add_argument("--timm-python", help="an interpreter with timm: compare the training step with it")
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--val-batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="decoding workers of the validation loader")
    parser.add_argument("--skip", choices=("training", "validation"), help="leave one comparison out")
    parser.add_argument("--worker", choices=("ours", "timm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.channels_last and args.precision == "fp32":
        parser.error("--channels-last in fp32: torch 2.13's CPU backward of FastViT's stem crashes on it (timm's too)")
    if args.worker:
        worker(args)
        return
    if args.skip != "training":
        if not args.timm_python:
            parser.error("--timm-python is needed for the training comparison (or --skip training)")
        compare_training(args)
    if args.skip != "validation":
        compare_validation(args)


if __name__ == "__main__":
    main()
