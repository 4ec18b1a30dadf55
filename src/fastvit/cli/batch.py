"""``fastvit predict``, ``features`` and ``embed``: a batch job over files, folders, globs and lists,
printed or written to resumable output files, sharded under ``torchrun -m fastvit``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ..errors import FastViTError
from ..runtime.predictor import BACKENDS, PRECISIONS
from .common import (
    EXIT_BAD_INPUTS,
    EXIT_OK,
    add_decode_option,
    add_model_options,
    device,
    load_model,
    non_negative,
    positive,
    read_labels,
)

IMAGENET_CLASSES = 1000


def _batch_job(args: argparse.Namespace, model, output):
    """The batch job of a predict/embed/features command: its settings, model call and pipeline."""
    from PIL import Image

    from ..data import resolve_data_config
    from ..jobs.job import BatchJob, JobSettings, PipelineOptions
    from ..jobs.outputs import make_forward
    from ..runtime.devices import Ranks, default_device, default_workers

    ranks = Ranks.from_env()
    device = args.device or default_device(ranks.local_rank)
    settings = JobSettings(
        model=args.model,
        checkpoint=args.checkpoint,
        data_config=resolve_data_config(model=model),
        output=output,
        precision=args.precision,
        backend=args.backend,
        chunk_size=args.chunk_size,
        max_image_pixels=Image.MAX_IMAGE_PIXELS if args.max_image_pixels is None else (args.max_image_pixels or None),
        decode=args.decode,
    )
    options = PipelineOptions(
        batch_size=args.batch_size,
        workers=default_workers(ranks.local_world_size) if args.workers is None else args.workers,
        pin_memory=device.type == "cuda",
        strict=args.strict,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    return BatchJob(settings, make_forward(model, args.precision, args.backend, device), options)


def _run_to_files(args: argparse.Namespace, job, writer, out: Path) -> int:
    """Run a job that writes files; print its summary (rank 0 only under torchrun)."""
    from ..jobs.store import JobFiles

    files = JobFiles.for_output(out)
    report = job.run_to_files(args.inputs, writer, files, files_from=args.files_from, overwrite=args.overwrite)
    if report is None:  # another rank writes the outputs
        return EXIT_OK
    if not args.quiet:
        _print_summary(report, out, files.errors)
    return EXIT_OK if report.images else EXIT_BAD_INPUTS


def _print_summary(report, out: Path, errors: Path) -> None:
    skipped = f", skipped: {report.skipped} (listed in {errors})" if report.skipped else ""
    counts = f"images: {report.images}{skipped}"
    if report.already_finished:
        print(f"{out} is up to date ({counts}): an earlier run of this command made it")
        return
    print(counts + (f"; {report.resumed} inputs were done by an earlier run" if report.resumed else ""))
    run = report.run
    print(f"this run: {run.images} in {run.seconds:.1f} s, {run.images_per_second:.1f} images/s")
    print(f"wrote {', '.join(str(path) for path in report.files)}")


def _run_in_memory(args: argparse.Namespace, job, paths: Sequence[str]):
    """Run a job whose results are printed: no files, no resuming; report skipped files on stderr."""
    from ..runtime.devices import Ranks

    if Ranks.from_env().world_size > 1:
        raise FastViTError("under torchrun, give --out: the processes combine their results in files")
    result = job.run_in_memory(paths)
    for chunk in result.chunks:
        for position, reason in chunk.failures():
            print(f"fastvit {args.command}: skipped {result.paths[position]}: {reason}", file=sys.stderr)
    return result


def _output_suffix(out: Path, formats: Sequence[str]) -> str:
    if out.suffix.lower() not in formats:
        raise FastViTError(f"--out {out}: unknown output format; expected a name ending in {', '.join(formats)}")
    if out.is_dir():
        raise FastViTError(f"--out {out}: a folder of that name is in the way of the output file")
    return out.suffix.lower()


def _predictions_writer(out: Path, labels: Sequence[str], top_k: int):
    from ..jobs.writers import PredictionsCsv, PredictionsJsonl, PredictionsParquet

    suffix = _output_suffix(out, (".csv", ".jsonl", ".parquet"))
    if suffix == ".csv":
        return PredictionsCsv(out, labels, top_k)
    if suffix == ".jsonl":
        return PredictionsJsonl(out, labels)
    return PredictionsParquet(out, labels)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data import imagenet_classes
    from ..jobs.inputs import collect_inputs
    from ..jobs.outputs import TopK

    labels = read_labels(Path(args.labels)) if args.labels else None
    model = load_model(args)
    if labels is None:  # weights written by fastvit train name their classes
        labels = model.pretrained_cfg.get("label_names")
    if labels is None and model.num_classes == IMAGENET_CLASSES:
        labels = imagenet_classes()
    if labels is None:
        raise FastViTError(
            f"the model outputs {model.num_classes} values, not the 1000 ImageNet classes: name its classes with "
            "--labels FILE (one per line), or use 'fastvit embed'"
        )
    if len(labels) != model.num_classes:
        raise FastViTError(f"{args.labels} names {len(labels)} classes, the model has {model.num_classes}")
    if args.top_k > model.num_classes and "top_k" in args.given:  # the default (5) is cut to the classes there are
        raise FastViTError(f"--top-k {args.top_k} is more than the model's {model.num_classes} classes")
    writer = _predictions_writer(Path(args.out), labels, args.top_k) if args.out else None
    job = _batch_job(args, model, TopK(args.top_k))
    if writer is not None:
        return _run_to_files(args, job, writer, Path(args.out))
    result = _run_in_memory(args, job, collect_inputs(args.inputs, args.files_from))
    predictions = [
        {
            "image": result.paths[position],
            "top_k": [
                {"index": index, "label": labels[index], "probability": round(probability, 6)}
                for index, probability in zip(row["indices"].tolist(), row["probabilities"].tolist())
            ],
        }
        for chunk in result.chunks
        for position, row in chunk.rows()
    ]
    if args.json and predictions:
        print(json.dumps(predictions if len(predictions) > 1 else predictions[0], indent=2))
    elif not args.json:
        for prediction in predictions:
            print(prediction["image"])
            for rank, entry in enumerate(prediction["top_k"], 1):
                print(f"  {rank}. {entry['probability'] * 100:6.2f}%  {entry['label']} ({entry['index']})")
    return EXIT_OK if predictions else EXIT_BAD_INPUTS


def _print_map_shapes(model, shapes: dict[str, tuple[int, ...]]) -> None:
    for index in model.out_indices:
        print(f"stage {index}: {tuple(shapes[f'stage{index}'])} (reduction {model.feature_info.reduction(index)})")


def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np

    from ..jobs.inputs import collect_inputs
    from ..jobs.outputs import FeatureMaps
    from ..jobs.writers import NpyArrays

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in ("", ".npz"):
        raise FastViTError(f"--out {out}: expected MAPS.npz (one image) or a folder name (any number of images)")
    paths = None
    if out is None or out.suffix:
        paths = collect_inputs(args.inputs, args.files_from)
        if len(paths) != 1:
            raise FastViTError(f"{len(paths)} images: the features of several images go to a folder, give --out FOLDER")
    model = load_model(args, features_only=True, out_indices=tuple(args.out_indices))
    job = _batch_job(args, model, FeatureMaps(tuple(model.out_indices)))
    if paths is None:
        files = {f"stage{index}": out / f"stage{index}.npy" for index in model.out_indices}
        code = _run_to_files(args, job, NpyArrays(files, out / "paths.csv"), out)
        if code == EXIT_OK and not args.quiet:
            _print_map_shapes(model, {name: np.load(path, mmap_mode="r").shape[1:] for name, path in files.items()})
        return code
    result = _run_in_memory(args, job, paths)
    if not result.stats.images:
        return EXIT_BAD_INPUTS
    _, maps = next(result.chunks[0].rows())
    _print_map_shapes(model, {name: values.shape for name, values in maps.items()})
    if out is not None:
        np.savez(out, **maps)
        print(f"wrote {out}")
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    from ..jobs.outputs import Embedding
    from ..jobs.store import sidecar
    from ..jobs.writers import EmbeddingsParquet, NpyArrays

    out = Path(args.out)
    suffix = _output_suffix(out, (".npy", ".parquet"))
    model = load_model(args) if args.projected else load_model(args, num_classes=0)  # 0: pooled pre-logits
    width = model.num_classes if args.projected else model.num_features
    if width == 0:
        raise FastViTError("--projected needs a model with a head; this checkpoint has none")
    if suffix == ".npy":
        writer = NpyArrays({"embedding": out}, sidecar(out, "paths.csv"), {"embedding": (width,)})
    else:
        writer = EmbeddingsParquet(out, width)
    job = _batch_job(args, model, Embedding(projected=args.projected, normalize=args.normalize))
    return _run_to_files(args, job, writer, out)


def _add_batch_options(parser: argparse.ArgumentParser, chunk_size: int) -> None:
    """Inputs, model and the batch-job flags shared by predict, embed and features."""
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image files, folders (searched recursively for images) or quoted glob patterns ('photos/**/*.jpg')",
    )
    parser.add_argument("--files-from", metavar="LIST", help="also the paths listed in LIST, one per line ('-': stdin)")
    add_model_options(parser)
    speed = parser.add_argument_group("speed")
    speed.add_argument("--batch-size", type=positive, default=32, help="images per model call (default 32)")
    speed.add_argument(
        "--workers", type=non_negative, metavar="N",
        help="processes decoding images (default: the CPUs, shared by the processes of this machine, at most 16; "
        "0 decodes in the main process)",
    )
    speed.add_argument("--device", type=device, help="cpu, cuda, cuda:N (default: this rank's GPU if any, else cpu)")
    add_decode_option(speed)
    run = parser.add_argument_group("results, bad files, resuming")
    run.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="compute precision (default fp32; bf16 needs a CPU with native bf16)")
    run.add_argument("--backend", choices=BACKENDS, default="torch", help="runtime (default torch)")
    run.add_argument("--strict", action="store_true", help="stop at the first file that cannot be read (exit code 1)")
    run.add_argument(
        "--max-image-pixels", type=non_negative, metavar="N",
        help="skip images of more pixels as decompression bombs (default: Pillow's limit, 89478485; 0: no limit)",
    )
    run.add_argument(
        "--chunk-size", type=positive, default=chunk_size,
        help=f"images per chunk committed to disk: a killed run loses at most the chunk it was computing "
        f"and the one it was writing (default {chunk_size})",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="discard the unfinished state of a run with other settings",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


_BATCH_EPILOG = """inputs are taken in order: each file as given, each folder's image files (by extension, hidden ones
left out) and each glob pattern's matches in sorted order, then the lines of --files-from. Results
are in input order; files that cannot be read (empty, truncated, not an image, over the pixel limit,
no permission) are skipped and listed with the reason in the errors file.

with --out, results are committed in chunks: a killed run, run again with the same command, goes on
where it stopped, and gives the same output as an uninterrupted run. Files for --out NAME.EXT:
  NAME.parts/      work in progress (removed when done)
  NAME.errors.csv  path,reason of each skipped file
  NAME.job.json    what was computed (model, weights, transform, inputs) and the counts
Several processes: torchrun --nproc-per-node N -m fastvit COMMAND ... --out ... splits the inputs
between ranks (one GPU each), and rank 0 writes the outputs. Across machines, --out must be on a
filesystem they all share.

exit codes: 0 done (skipped files, if any, are in the errors file); 1 --strict stopped at a bad file,
or no input could be read; 2 bad arguments, model, weights, inputs or unfinished state of another
run; 130 interrupted (with --out, run the same command again to resume).
"""


_BATCH_EPILOG = """inputs are taken in order: each file as given, each folder's image files (by extension, hidden ones
left out) and each glob pattern's matches in sorted order, then the lines of --files-from. Results
are in input order; files that cannot be read (empty, truncated, not an image, over the pixel limit,
no permission) are skipped and listed with the reason in the errors file.

with --out, results are committed in chunks: a killed run, run again with the same command, goes on
where it stopped, and gives the same output as an uninterrupted run. Files for --out NAME.EXT:
  NAME.parts/      work in progress (removed when done)
  NAME.errors.csv  path,reason of each skipped file
  NAME.job.json    what was computed (model, weights, transform, inputs) and the counts
Several processes: torchrun --nproc-per-node N -m fastvit COMMAND ... --out ... splits the inputs
between ranks (one GPU each), and rank 0 writes the outputs. Across machines, --out must be on a
filesystem they all share.

exit codes: 0 done (skipped files, if any, are in the errors file); 1 --strict stopped at a bad file,
or no input could be read; 2 bad arguments, model, weights, inputs or unfinished state of another
run; 130 interrupted (with --out, run the same command again to resume).
"""


def add_commands(commands) -> None:
    batch_command = partial(
        commands.add_parser, epilog=_BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    predict = batch_command(
        "predict", help="top-k ImageNet classes of images",
        description="Classify images with the model's own eval transform: print the top-k classes, or write them\n"
        "to --out (CSV: path,index_1,label_1,probability_1,...; JSONL: path, indices, labels,\n"
        "probabilities; Parquet: the same columns, needs pyarrow).",
    )
    _add_batch_options(predict, chunk_size=1024)
    predict.add_argument("--top-k", type=positive, default=5, help="how many classes (default 5)")
    predict.add_argument("--labels", metavar="FILE",
                         help="class names, one per line, for a model fine-tuned on other classes "
                              "(default: those a checkpoint written by fastvit train names, else the ImageNet-1k "
                              "names for 1000 outputs)")
    destination = predict.add_mutually_exclusive_group()
    destination.add_argument("--json", action="store_true", help="print JSON")
    destination.add_argument("--out", metavar="PREDS.{csv,jsonl,parquet}", help="write the predictions to a file")
    predict.set_defaults(run=cmd_predict)

    features = batch_command(
        "features", help="multi-scale feature maps of images",
        description="Run the features_only model; print each map's shape. --out MAPS.npz saves the maps of one\n"
        "image (one C x H x W array per stage); --out FOLDER saves those of any number of images as\n"
        "FOLDER/stage<i>.npy (N x C x H x W, rows in input order) with FOLDER/paths.csv.",
    )
    _add_batch_options(features, chunk_size=64)
    features.add_argument("--out-indices", type=int, nargs="+", default=[0, 1, 2, 3],
                          help="stages, in any order; negative ones count from the last (default 0 1 2 3)")
    features.add_argument("--out", metavar="MAPS.npz|FOLDER", help="save the maps")
    features.set_defaults(run=cmd_features)

    embed = batch_command(
        "embed", help="pooled embeddings of images",
        description="Write the pooled pre-logits embedding of each image, in input order: EMB.npy\n"
        "(N x num_features, float32) with EMB.paths.csv (the path of each row), or EMB.parquet\n"
        "(columns path, embedding; needs pyarrow).",
    )
    _add_batch_options(embed, chunk_size=1024)
    embed.add_argument("--out", required=True, metavar="EMB.{npy,parquet}", help="output file")
    embed.add_argument("--projected", action="store_true",
                       help="the model's own output instead of the pre-logits: for the MobileCLIP towers "
                            "(fastvit_mci*), the CLIP image embedding that text embeddings compare with")
    embed.add_argument("--normalize", action="store_true", help="scale each embedding to unit L2 length (cosine search)")
    embed.set_defaults(run=cmd_embed)
