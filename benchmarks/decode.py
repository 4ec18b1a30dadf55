"""Image decoding and resizing against the model, exact and fast (``--decode``), in one run.

    python benchmarks/decode.py                          # the three parts: a few minutes on 2 cores
    python benchmarks/decode.py --parts steps quality

* steps: per-image CPU costs on one core (what a decoding worker has): decode, resize, crop and
  to-tensor at 0.3, 1, 3 and 12 megapixels, JPEG (quality 90) and PNG, exact and fast; then each
  choice the fast path makes, timed against its alternatives.
* folders: ``embed`` and ``predict`` end to end (the library calls behind the commands: worker
  processes, model, chunk commits, output files) against the model alone on ready-made batches,
  exact and fast (and fast with the decoding workers at normal priority), on a folder of mixed
  300-1,200 px JPEGs and one of 12-megapixel JPEGs; each run is compared with the model alone
  timed just before and after it, and the table shows medians over rounds.
* quality: fast against exact on real photos (tests/images, and scikit-image's sample images when
  it is installed), at their own size and enlarged to 1, 3 and 12 megapixels: pixel differences
  after the transform, and the embeddings' cosine similarity and top-1 agreement of fastvit_t8
  with the tests' synthetic timm-layout weights (``--checkpoint`` adds trained weights), and with
  ``--digits-checkpoint`` a model trained on scikit-learn's digits, on digits enlarged the same way.

Photos larger than the sources are mosaics of random crops of them, enlarged, with a little
sensor-like grain (Gaussian, sigma 2 grey levels) so that they carry detail at full resolution as
camera photos do, saved as JPEG quality 90 in a temporary folder. Models have random or synthetic
weights (speed does not depend on them): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pipeline import make_photos, model_only

import fastvit
from fastvit.data import create_decoder, load_image, resolve_data_config
from fastvit.data.decoding import reduced_size_needed, resize_reduced
from fastvit.data.loading import ImageReader
from fastvit.data.transforms import ToUint8Tensor
from fastvit.jobs import pipeline as job_pipeline
from fastvit.jobs.job import BatchJob, JobSettings, PipelineOptions
from fastvit.jobs.outputs import Embedding, TopK, make_forward
from fastvit.jobs.store import JobFiles, sidecar
from fastvit.jobs.writers import NpyArrays, PredictionsCsv
from fastvit.runtime.devices import default_workers
from fastvit.runtime.predictor import AUTO_COMPILE_CALLS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from synthetic_weights import synthetic_state_dict  # noqa: E402

SIZES = {"0.3 MP": (640, 480), "1 MP": (1152, 864), "3 MP": (2048, 1536), "12 MP": (4000, 3000)}
SKIMAGE_PHOTOS = ("hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "camera.png", "coins.png",
                  "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png", "clock_motion.png", "page.png")
MODEL = "fastvit_t8"
DEFAULT_NICENESS = job_pipeline.WORKER_NICENESS


# ----------------------------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------------------------


def real_photos() -> dict[str, Image.Image]:
    """The test photos and, when scikit-image is installed, its sample photos (grey ones as RGB)."""
    paths = sorted((ROOT / "tests" / "images").iterdir())
    try:
        import skimage

        paths += [Path(skimage.__file__).parent / "data" / name for name in SKIMAGE_PHOTOS]
    except ImportError:
        print("(scikit-image is not installed: the quality part uses tests/images only)")
    return {path.name: load_image(path) for path in paths if path.exists()}


def large_photo(sources: list[Image.Image], size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A 2 x 2 mosaic of random crops of ``sources`` filling ``size``, with grain."""
    mosaic = Image.new("RGB", size)
    tile_w, tile_h = size[0] // 2, size[1] // 2
    for left, top in ((0, 0), (tile_w, 0), (0, tile_h), (tile_w, tile_h)):
        mosaic.paste(enlarged_crop(rng.choice(sources), (tile_w, tile_h), rng), (left, top))
    return with_grain(mosaic, rng)


def enlarged_crop(image: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A random crop of ``image`` with the aspect ratio of ``size``, resized to ``size``."""
    aspect = size[0] / size[1]
    width = min(image.width, round(image.height * aspect)) * rng.uniform(0.6, 1.0)
    height = width / aspect
    left, top = rng.uniform(0, image.width - width), rng.uniform(0, image.height - height)
    return image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + width, top + height))


def with_grain(image: Image.Image, rng: random.Random, sigma: float = 2.0) -> Image.Image:
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).round().astype(np.uint8))


# ----------------------------------------------------------------------------------------------
# Part 1: per-image steps
# ----------------------------------------------------------------------------------------------


def cpu_ms(work: Callable[[], object], repeats: int) -> float:
    """CPU milliseconds of ``work()``, the least of ``repeats`` runs (CPU time, not wall time: on a
    shared machine, waiting for a core does not count)."""
    work()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return 1e3 * min(times)


def step_costs(path: Path, decoders: dict, repeats: int) -> dict[str, float]:
    """Milliseconds of each step of the exact and the fast path on the image at ``path``."""
    resize, crop = decoders["exact"].per_image.transforms[1:3]
    to_tensor = ToUint8Tensor()
    with ImageReader(path) as reader:
        plan, full = resize.plan(*reader.size), reader.size
    needed = reduced_size_needed(plan, full)

    def fast_decode() -> tuple[Image.Image, float]:
        with ImageReader(path) as reader:
            return reader.decode(needed), reader.reduction

    exact_image, (fast_image, reduction) = load_image(path), fast_decode()
    exact_resized, fast_resized = resize(exact_image), resize_reduced(fast_image, plan, full, reduction, tensor_ok=True)
    costs = {
        "exact decode": cpu_ms(lambda: load_image(path), repeats),
        "exact resize": cpu_ms(lambda: resize(exact_image), repeats),
        "exact crop+tensor": cpu_ms(lambda: to_tensor(crop(exact_resized)), repeats),
        "fast decode": cpu_ms(fast_decode, repeats),
        "fast resize": cpu_ms(lambda: resize_reduced(fast_image, plan, full, reduction, tensor_ok=True), repeats),
        "fast crop+tensor": cpu_ms(lambda: to_tensor(crop(fast_resized)), repeats),
    }
    filters = {"bicubic": Image.Resampling.BICUBIC}
    # the choices: what else the fast path could do with the image it decodes
    costs["Pillow resize"] = cpu_ms(lambda: fast_image.resize(plan.size, filters["bicubic"]), repeats)
    costs["Pillow reduce+resize"] = cpu_ms(
        lambda: fast_image.resize(plan.size, filters["bicubic"], reducing_gap=2.0), repeats)
    costs["torch resize"] = cpu_ms(lambda: resize_reduced(fast_image, plan, full, reduction, tensor_ok=True), repeats)
    costs["torch, no reduce"] = cpu_ms(lambda: torch_resize(fast_image, plan.size), repeats)
    if path.suffix == ".jpg":
        for scale in (2, 8):
            costs[f"decode 1/{scale}"] = cpu_ms(partial(draft_decode, path, scale), repeats)
    return costs


def torch_resize(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)
    return torch.nn.functional.interpolate(pixels, size[::-1], mode="bicubic", antialias=True)


def draft_decode(path: Path, scale: int) -> Image.Image:
    with Image.open(path) as image:
        image.draft(None, (image.width // scale, image.height // scale))
        image.load()
        return image


def part_steps(folder: Path, repeats: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a decoding worker
    config = resolve_data_config(model=MODEL)
    decoders = {mode: create_decoder(config, mode) for mode in ("exact", "fast")}
    sources = list(real_photos().values())
    rng = random.Random(0)
    rows = []
    for name, size in SIZES.items():
        photo = large_photo(sources, size, rng)
        for suffix, save in ((".jpg", {"quality": 90}), (".png", {})):
            path = folder / f"{name.replace(' ', '')}{suffix}"
            photo.save(path, **save)
            rows.append((name, suffix[1:].upper(), path.stat().st_size / 1e6, step_costs(path, decoders, repeats)))
    total = lambda costs, mode: sum(costs[f"{mode} {step}"] for step in ("decode", "resize", "crop+tensor"))  # noqa: E731
    print(f"\nPer image, one core, CPU ms (least of {repeats}): the exact and the fast path for fastvit_t8 "
          "(resize to 284, crop 256)\n")
    print("| image | file MB | exact: decode | resize | crop+tensor | **total** | fast: decode | resize | crop+tensor "
          "| **total** | exact / fast |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, kind, megabytes, c in rows:
        exact, fast = total(c, "exact"), total(c, "fast")
        print(f"| {name} {kind} | {megabytes:.1f} | {c['exact decode']:.1f} | {c['exact resize']:.1f} | "
              f"{c['exact crop+tensor']:.2f} | **{exact:.1f}** | {c['fast decode']:.1f} | {c['fast resize']:.1f} | "
              f"{c['fast crop+tensor']:.2f} | **{fast:.1f}** | {exact / fast:.1f}x |")
    print("\nThe fast path's choices, CPU ms: resizing the image the fast decode gives (torch = what fast does: "
          "Pillow reduce() first when that still leaves 2x), and JPEG decoding at other DCT scales\n")
    print("| image | fast decode gives | Pillow bicubic | Pillow reduce+bicubic | torch | torch, no reduce | "
          "decode 1/2 | decode 1/8 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, kind, _, c in rows:
        path = folder / f"{name.replace(' ', '')}.{kind.lower()}"
        with ImageReader(path) as reader:
            plan = decoders["exact"].per_image.transforms[1].plan(*reader.size)
            decoded = reader.decode(reduced_size_needed(plan, reader.size)).size
        drafts = " | ".join(f"{c[key]:.1f}" if key in c else "-" for key in ("decode 1/2", "decode 1/8"))
        print(f"| {name} {kind} | {decoded[0]}x{decoded[1]} | {c['Pillow resize']:.1f} | {c['Pillow reduce+resize']:.1f} | "
              f"{c['torch resize']:.1f} | {c['torch, no reduce']:.1f} | {drafts} |")
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Part 2: folders, end to end against model-only
# ----------------------------------------------------------------------------------------------


def make_large_photos(folder: Path, count: int, unique: int, size: tuple[int, int]) -> None:
    """``count`` JPEGs of ``size``: ``unique`` different ones, repeated (decoding costs the same)."""
    sources, rng = list(real_photos().values()), random.Random(1)
    for index in range(unique):
        large_photo(sources, size, rng).save(folder / f"photo{index:04d}.jpg", quality=90)
    for index in range(unique, count):
        shutil.copyfile(folder / f"photo{index % unique:04d}.jpg", folder / f"photo{index:04d}.jpg")


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (the decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def end_to_end(job: BatchJob, folder: Path, out: Path, writer) -> tuple[float, float]:
    """Images/s of a job writing ``out`` from ``folder`` (from the call to the written files), and
    CPU ms per image of all its processes."""
    started, cpu = time.perf_counter(), cpu_seconds()
    report = job.run_to_files([str(folder)], writer, JobFiles.for_output(out))
    return report.images / (time.perf_counter() - started), 1e3 * (cpu_seconds() - cpu) / report.images


def model_alone(forward, batch: torch.Tensor, images: int) -> tuple[float, float]:
    """Images/s of the model alone on ``batch`` over about ``images`` images, and CPU ms per image."""
    cpu = cpu_seconds()
    rate = model_only(forward, batch, images, torch.device("cpu"))
    computed = (max(1, images // len(batch)) + 1) * len(batch)  # with model_only's warm-up call
    return rate, 1e3 * (cpu_seconds() - cpu) / computed


def part_folders(work: Path, mixed: int, large: int, rounds: int, batch_size: int, workers: int) -> None:
    folders = {"mixed 300-1,200 px JPEGs": work / "mixed", "12 MP JPEGs": work / "large"}
    for folder in folders.values():
        folder.mkdir()
    started = time.perf_counter()
    make_photos(folders["mixed 300-1,200 px JPEGs"], mixed, sides=(300, 1200), sources=list(real_photos().values()))
    make_large_photos(folders["12 MP JPEGs"], large, unique=min(large, 16), size=SIZES["12 MP"])
    print(f"\nmade {mixed} mixed and {large} 12-MP JPEGs in {time.perf_counter() - started:.0f} s")

    commands = {}
    for command, num_classes, output in (("embed", 0, Embedding()), ("predict", 1000, TopK(5))):
        model = fastvit.create_model(MODEL, num_classes=num_classes).eval()
        forward = make_forward(model)
        batch = torch.randn(batch_size, 3, 256, 256).contiguous(memory_format=torch.channels_last)  # as jobs give
        for _ in range(AUTO_COMPILE_CALLS + 1):  # compiled before anything is timed
            forward(batch)
        commands[command] = (forward, batch, output)
    config = resolve_data_config(model=MODEL)
    options = PipelineOptions(batch_size=batch_size, workers=workers)
    ratios: dict[tuple[str, str, str], list[float]] = {}
    rates: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}  # CPU ms per image
    for round_ in range(rounds):
        for (label, folder), (command, (forward, batch, output)) in (
            (f, c) for f in folders.items() for c in commands.items()
        ):
            count = mixed if folder.name == "mixed" else large
            # the last: decoders at the model's priority instead of the lowest (the choice in fastvit.jobs.pipeline)
            for variant in ("exact", "fast", "fast, decoders at normal priority"):
                job_pipeline.WORKER_NICENESS = 0 if "normal priority" in variant else DEFAULT_NICENESS
                job = BatchJob(JobSettings(MODEL, None, config, output, decode=variant.split(",")[0]), forward, options)
                out = work / f"{command}-{variant[:12]}-{folder.name}-{round_}.{'npy' if command == 'embed' else 'csv'}"
                writer = (NpyArrays({"embedding": out}, sidecar(out, "paths.csv")) if command == "embed"
                          else PredictionsCsv(out, fastvit.imagenet_classes(), 5))
                before, model_cpu = model_alone(forward, batch, count // 2)
                rate, job_cpu = end_to_end(job, folder, out, writer)
                after, _ = model_alone(forward, batch, count // 2)
                alone = (before + after) / 2  # the model alone around the run
                for kind, value, ms in ((variant, rate, job_cpu), ("model-only", alone, model_cpu)):
                    rates.setdefault((label, command, kind), []).append(value)
                    cpu.setdefault((label, command, kind), []).append(ms)
                ratios.setdefault((label, command, variant), []).append(rate / alone)
            job_pipeline.WORKER_NICENESS = DEFAULT_NICENESS
        print(f"round {round_ + 1}/{rounds} done")
    print(f"\nEnd to end against model-only: {MODEL} 256x256 fp32, batch {batch_size}, {workers} decoding workers "
          f"(medians of {rounds} rounds; each ratio is to the model alone timed just before and after that run)\n")
    print("| folder | command | model-only img/s | exact img/s | exact / model-only | fast img/s | fast / model-only "
          "| fast / exact | fast, decoders at normal priority / model-only |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in folders:
        for command in commands:
            rate = {kind: statistics.median(values) for (f, c, kind), values in rates.items() if (f, c) == (label, command)}
            ratio = {kind: statistics.median(values) for (f, c, kind), values in ratios.items() if (f, c) == (label, command)}
            print(f"| {label} | {command} | {rate['model-only']:.1f} | {rate['exact']:.1f} | {ratio['exact']:.0%} | "
                  f"{rate['fast']:.1f} | {ratio['fast']:.0%} | {rate['fast'] / rate['exact']:.1f}x | "
                  f"{ratio['fast, decoders at normal priority']:.0%} |")
    print("\nCPU time per image of all processes (ms, medians), and the model's share of it: the ratio to model-only "
          "on a machine where no core waits and nothing else runs (an upper bound; waiting for the shared cores "
          "does not count)\n")
    print("| folder | command | model-only | exact | fast | model / exact | model / fast |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label in folders:
        for command in commands:
            ms = {kind: statistics.median(values) for (f, c, kind), values in cpu.items() if (f, c) == (label, command)}
            print(f"| {label} | {command} | {ms['model-only']:.1f} | {ms['exact']:.1f} | {ms['fast']:.1f} | "
                  f"{ms['model-only'] / ms['exact']:.0%} | {ms['model-only'] / ms['fast']:.0%} |")


# ----------------------------------------------------------------------------------------------
# Part 3: quality of fast against exact
# ----------------------------------------------------------------------------------------------


def quality_images(folder: Path, crops: int) -> dict[str, list[Path]]:
    """Per size: the real photos as they are, then ``crops`` random crops of each enlarged to 1, 3 and 12 MP."""
    photos, rng = real_photos(), random.Random(2)
    sets: dict[str, list[Path]] = {"own size": []}
    for name, photo in photos.items():
        path = folder / f"own-{name}"
        photo.save(path.with_suffix(".png"))  # lossless: the photo as it is
        sets["own size"].append(path.with_suffix(".png"))
    for label, size in list(SIZES.items())[1:]:
        sets[label] = []
        for name, photo in photos.items():
            for index in range(crops):
                side = size if index % 2 == 0 else size[::-1]  # landscape and portrait
                path = folder / f"{label.replace(' ', '')}-{index}-{Path(name).stem}.jpg"
                with_grain(enlarged_crop(photo, side, rng), rng).save(path, quality=90)
                sets[label].append(path)
    return sets


def digit_images(folder: Path, count: int) -> tuple[dict[str, list[Path]], torch.Tensor]:
    """scikit-learn's digits as ``fastvit train`` learns them (tests/digits.py: 64 x 64 PNGs, dark
    ink on white), ``count`` of them, and the same centred on white 1, 3 and 12 MP canvases with
    grain, as JPEG quality 90; and their labels."""
    from digits import write_digits  # tests/digits.py

    own = write_digits(folder / "own", per_class=-(-count // 10))[:count]
    sets: dict[str, list[Path]] = {"own size": own}
    rng = random.Random(3)
    for label, size in list(SIZES.items())[1:]:
        sets[label] = []
        for index, path in enumerate(own):
            canvas = Image.new("RGB", size, "white")
            digit = load_image(path).resize((size[1], size[1]), Image.Resampling.BICUBIC)
            canvas.paste(digit, ((size[0] - size[1]) // 2, 0))
            sets[label].append(folder / f"{label.replace(' ', '')}-{index}.jpg")
            with_grain(canvas, rng).save(sets[label][-1], quality=90)
    return sets, torch.tensor([int(path.parent.name) for path in own])


def synthetic_t8() -> torch.nn.Module:
    with torch.device("meta"):
        model = fastvit.create_model(MODEL)
    model.load_state_dict(synthetic_state_dict(model.state_dict()), strict=True, assign=True)
    return model.eval()


def part_quality(folder: Path, crops: int, checkpoint: str | None, digits_checkpoint: str | None, digits: int) -> None:
    print("\nQuality of fast against exact: pixels after the transform (uint8, 0-255); embeddings (pre-logits) and "
          "top-1 classes, raw and centred on the set's mean (synthetic weights give every photo the same top class "
          "and embeddings that share a large common part; centring leaves what tells the photos apart)\n")
    print("| images | count | mean abs. pixel diff. | largest pixel diff. | model | cosine mean / min | centred cosine "
          "mean / min | top-1 agreement (classes) | centred top-1 agreement (classes) | accuracy exact / fast |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    (folder / "photos").mkdir()
    models = {f"{MODEL}, synthetic timm-layout weights": synthetic_t8()}
    if checkpoint:
        models[f"{MODEL}, {checkpoint}"] = fastvit.create_model(MODEL, checkpoint_path=checkpoint).eval()
    for label, paths in quality_images(folder / "photos", crops).items():
        for name, model in models.items() if paths else ():
            print(quality_row(f"photos, {label}", paths, name, model))
    if digits_checkpoint:
        (folder / "digits").mkdir()
        model = fastvit.create_model(MODEL, checkpoint_path=digits_checkpoint).eval()
        sets, labels = digit_images(folder / "digits", digits)
        for label, paths in sets.items():
            print(quality_row(f"digits, {label}", paths, f"{MODEL} trained on digits", model, labels))


def quality_row(images: str, paths: list[Path], name: str, model: torch.nn.Module, labels: torch.Tensor | None = None) -> str:
    decoders = {mode: create_decoder(resolve_data_config(model=model), mode) for mode in ("exact", "fast")}
    pixels = {mode: torch.stack([decoder(path) for path in paths]) for mode, decoder in decoders.items()}
    difference = (pixels["exact"].int() - pixels["fast"].int()).abs()
    with torch.inference_mode():
        features = {mode: model.forward_features(decoders[mode].to_float(batch)) for mode, batch in pixels.items()}
        embeddings = {mode: model.forward_head(f, pre_logits=True) for mode, f in features.items()}
        logits = {mode: model.forward_head(f) for mode, f in features.items()}
    cosine, centred_cosine = (
        torch.nn.functional.cosine_similarity(embeddings["exact"] - mean, embeddings["fast"] - mean)
        for mean in (0, embeddings["exact"].mean(0))
    )
    top1, centred_top1 = (agreement(logits["exact"] - mean, logits["fast"] - mean) for mean in (0, logits["exact"].mean(0)))
    accuracy = "-"
    if labels is not None:
        accuracy = " / ".join(f"{(logits[mode].argmax(-1) == labels).float().mean():.1%}" for mode in ("exact", "fast"))
    return (f"| {images} | {len(paths)} | {difference.float().mean():.3f} | {difference.max()} | {name} | "
            f"{cosine.mean():.5f} / {cosine.min():.5f} | {centred_cosine.mean():.5f} / {centred_cosine.min():.5f} | "
            f"{top1} | {centred_top1} | {accuracy} |")


def agreement(exact: torch.Tensor, fast: torch.Tensor) -> str:
    """How often the top classes agree, and how many classes the exact ones are."""
    same = (exact.argmax(-1) == fast.argmax(-1)).float().mean().item()
    return f"{same:.1%} ({len(set(exact.argmax(-1).tolist()))})"


# ----------------------------------------------------------------------------------------------


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("steps", "folders", "quality"), default=["steps", "folders", "quality"])
    parser.add_argument("--repeats", type=int, default=5, help="timings per step (the least counts)")
    parser.add_argument("--mixed", type=int, default=1200, help="JPEGs in the mixed folder")
    parser.add_argument("--large", type=int, default=40, help="JPEGs in the 12-MP folder")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the folders part (medians)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--crops", type=int, default=4, help="enlarged crops of each photo per size (quality)")
    parser.add_argument("--checkpoint", help=f"trained {MODEL} weights to add to the quality part, on the photos")
    parser.add_argument("--digits-checkpoint", help=f"a {MODEL} trained on scikit-learn's digits (fastvit train): "
                        "adds the digits, enlarged the same way, with accuracy")
    parser.add_argument("--digits", type=int, default=200, help="digits for --digits-checkpoint")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_name()}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"Pillow {Image.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "steps" in args.parts:
            (work / "steps").mkdir()
            part_steps(work / "steps", args.repeats)
        if "folders" in args.parts:
            part_folders(work, args.mixed, args.large, args.rounds, args.batch_size, args.workers)
        if "quality" in args.parts:
            (work / "quality").mkdir()
            part_quality(work / "quality", args.crops, args.checkpoint, args.digits_checkpoint, args.digits)


if __name__ == "__main__":
    main()
