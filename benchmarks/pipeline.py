"""End-to-end batch throughput against model-only throughput, at the same batch size.

Builds a folder of real JPEGs (random crops and resizes of tests/images) in a temporary
directory, then measures

* model-only: the job's model call (fused, inference mode) on ready-made batches;
* end-to-end: ``fastvit embed FOLDER --out emb.npy`` as a library call (decoding, transforms,
  worker processes, model, chunk commits, merge), timed from start to written outputs.

The model has random weights (speed does not depend on them), so nothing is downloaded.

    python benchmarks/pipeline.py --images 3000 --batch-size 64 --workers 8
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import fastvit
from fastvit.data import resolve_data_config
from fastvit.jobs.job import BatchJob, JobSettings, PipelineOptions
from fastvit.jobs.outputs import Embedding, make_forward
from fastvit.jobs.store import JobFiles, sidecar
from fastvit.jobs.writers import NpyArrays
from fastvit.runtime.devices import default_device, default_workers

SOURCES = Path(__file__).resolve().parents[1] / "tests" / "images"


def make_photos(
    folder: Path, count: int, seed: int = 0, sides: tuple[int, int] = (256, 1024),
    sources: list[Image.Image] | None = None,
) -> None:
    """``count`` JPEGs, each a random crop of a test image (or of ``sources``) resized to ``sides``
    (least, most) pixels on its long side."""
    rng = random.Random(seed)
    sources = sources or [Image.open(path).convert("RGB") for path in sorted(SOURCES.iterdir())]
    for index in range(count):
        image = sources[index % len(sources)]
        width, height = rng.randint(image.width // 3, image.width), rng.randint(image.height // 3, image.height)
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
        scale = rng.randint(*sides) / max(width, height)
        crop = image.crop((left, top, left + width, top + height))
        resized = crop.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC)
        subfolder = folder / f"{index // 1000:03d}"
        subfolder.mkdir(exist_ok=True)
        resized.save(subfolder / f"photo{index:06d}.jpg", quality=rng.randint(75, 95))


def model_only(forward, batch: torch.Tensor, images: int, device: torch.device) -> float:
    """Images/s of ``forward`` alone on ``batch``, over about ``images`` images after a warm-up."""
    repeats = max(1, images // len(batch))
    forward(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        output = forward(batch)
    output.cpu()  # waits for the GPU
    return repeats * len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="fastvit_t8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--model-only-images", type=int, default=None, help="default: --images")
    args = parser.parse_args()
    device = default_device()

    model = fastvit.create_model(args.model, num_classes=0).eval()
    settings = JobSettings(args.model, None, resolve_data_config(model=model), Embedding(), args.precision)
    forward = make_forward(model, args.precision, "torch", device)
    options = PipelineOptions(batch_size=args.batch_size, workers=args.workers, pin_memory=device.type == "cuda")
    job = BatchJob(settings, forward, options)

    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        started = time.perf_counter()
        make_photos(photos, args.images)
        megabytes = sum(p.stat().st_size for p in photos.rglob("*.jpg")) / 1e6
        print(f"made {args.images} JPEGs ({megabytes:.0f} MB) in {time.perf_counter() - started:.0f} s")

        batch = torch.randn(args.batch_size, *settings.data_config["input_size"])
        if options.pin_memory:
            batch = batch.pin_memory()
        model_rate = model_only(forward, batch, args.model_only_images or args.images, device)

        out = Path(tmp) / "emb.npy"
        started = time.perf_counter()
        writer = NpyArrays({"embedding": out}, sidecar(out, "paths.csv"))
        report = job.run_to_files([str(photos)], writer, JobFiles.for_output(out))
        end_to_end = report.images / (time.perf_counter() - started)

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads"
    print(f"{args.model} {settings.data_config['input_size'][1:]} {args.precision}, batch {args.batch_size}, "
          f"{args.workers} workers, {where}")
    print(f"model-only:  {model_rate:8.1f} images/s")
    print(f"end-to-end:  {end_to_end:8.1f} images/s  ({report.images} images, loop alone "
          f"{report.run.images_per_second:.1f} images/s)")
    print(f"ratio:       {end_to_end / model_rate:8.1%}")


if __name__ == "__main__":
    main()
