"""``fastvit train`` (fine-tune on a folder of labelled images, resumable, data-parallel under
torchrun) and ``fastvit validate`` (accuracy, per-class results and the confusion matrix)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from ..errors import FastViTError
from ..runtime.predictor import BACKENDS
from ..runtime.predictor import PRECISIONS as INFERENCE_PRECISIONS
from .common import (
    EXIT_BAD_INPUTS,
    EXIT_OK,
    add_decode_option,
    add_model_options,
    device,
    image_side,
    load_model,
    model_name,
    non_negative,
    non_negative_number,
    positive,
    positive_number,
)


def _fraction(text: str) -> float:
    value = non_negative_number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _probability(text: str) -> float:
    value = non_negative_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a probability is at most 1, got {text}")
    return value


def _rand_augment(text: str) -> str:
    from ..data.augment import RandAugment

    try:
        RandAugment.from_config(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# ----------------------------------------------------------------------------------------------
# fastvit train
# ----------------------------------------------------------------------------------------------


_FLAGS = {"label_smoothing": "--smoothing", "auto_augment": "--aa", "pretrained": "--no-pretrained"}
"""The flags of the TrainConfig fields not named after them."""


def _config(args: argparse.Namespace):
    """The run's TrainConfig: from the arguments, or, with --resume, from the run's config.json
    with only the options a resumed run may change taken from the arguments."""
    from ..train.config import CHANGEABLE_ON_RESUME, TrainConfig

    if args.checkpoint and not args.pretrained:
        raise FastViTError("--no-pretrained starts from random weights and --checkpoint from a file: give one of them")
    values = {field.name: getattr(args, field.name) for field in fields(TrainConfig)
             if hasattr(args, field.name) and field.name != "out"}
    values["model"] = str(args.model)
    values["input_size"] = tuple(args.input_size) if args.input_size else None
    values["scale"] = tuple(args.scale)
    values["device"] = str(args.device) if args.device else None
    if args.amp:
        values["precision"] = _amp_precision(args.device)
    if args.resume is None:
        return TrainConfig(out=args.out, **values | {"model": model_name(args.model, args.checkpoint)})
    run = TrainConfig.of_run(Path(args.resume))
    typed = {"precision" if name == "amp" else name for name in args.given}
    changed = [name for name in values if name in typed]
    fixed = [name for name in changed if name not in CHANGEABLE_ON_RESUME and values[name] != getattr(run, name)]
    if fixed:
        options = ", ".join(_FLAGS.get(name, "--" + name.replace("_", "-")) for name in fixed)
        raise FastViTError(
            f"--resume continues {args.resume} with the options it was started with (its config.json); "
            f"{options} cannot change (only DATA, --workers, --device and --quiet can)"
        )
    return replace(run, **{name: values[name] for name in changed if name in CHANGEABLE_ON_RESUME})


def _amp_precision(chosen) -> str:
    import torch

    on_gpu = chosen.type == "cuda" if chosen else torch.cuda.is_available()
    return "fp16" if on_gpu and not torch.cuda.is_bf16_supported() else "bf16"


def cmd_train(args: argparse.Namespace) -> int:
    from ..runtime.devices import Ranks, default_device, process_group
    from ..train import Trainer

    if args.resume is None and args.out is None:
        raise FastViTError("give --out RUN for a new run, or --resume RUN to continue one")
    config = _config(args)
    ranks = Ranks.from_env()
    on_gpu = (args.device or default_device(ranks.local_rank)).type == "cuda"
    with process_group(ranks, "nccl" if on_gpu else "gloo"):
        trainer = Trainer(config, resume=args.resume is not None, ranks=ranks,
                          progress=not config.quiet and sys.stderr.isatty())
        summary = trainer.fit()
    if ranks.is_main and not config.quiet and summary.metrics:
        print(f"best top-1 {summary.best_top1:.2f}% at epoch {summary.best_epoch}: {summary.out / 'best.safetensors'} "
              f"(fused: {summary.out / 'fused.safetensors'}); metrics: {summary.out / 'metrics.jsonl'}")
    return EXIT_OK


_TRAIN_EPILOG = """data layouts (classes are the training folder names, sorted):
  DATA/train/<class>/*  DATA/val/<class>/*     an ImageFolder
  DATA/<class>/* --val-split 0.2               one folder of class folders, 20 % of each class held out
  --train-list train.csv --val-list val.csv    CSV lists of path,label
Images Pillow cannot open are skipped and listed in RUN/errors.csv (--strict stops instead); an image
too small to crop (a side under 1/8 of the input side) stops the run.

files in RUN (--out): last.pt (state to resume, every epoch), best.safetensors (best validation top-1;
its metadata names the model, classes and preprocessing, so fastvit predict/validate/export take it
as it is), fused.safetensors (the same, reparameterized), classes.txt, metrics.jsonl, metrics.png,
config.json (every option), errors.csv (skipped files, if any).

resume a run stopped at any moment (Ctrl-C, SIGKILL, a crash): fastvit train --resume RUN. It goes on
from the last finished epoch; on the CPU the result equals an uninterrupted run's.
several processes: torchrun --nproc-per-node N -m fastvit train ... (gloo on CPUs, nccl on GPUs;
--batch-size is per process; rank 0 writes the files).
"""


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.augment import ERASE_MODES
    from ..train.config import PRECISIONS, TrainConfig

    default = TrainConfig(out="")
    parser.add_argument("data", nargs="?", metavar="DATA", help="the data folder (see below)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--out", metavar="RUN", help="folder of the new run's files (e.g. runs/pets)")
    run.add_argument("--resume", metavar="RUN", help="continue the run in this folder with its own options")

    data = parser.add_argument_group("data")
    data.add_argument("--val-split", type=_fraction, metavar="FRACTION",
                      help="hold out this fraction of each class of DATA for validation (seeded by --seed)")
    data.add_argument("--train-list", metavar="CSV", help="path,label rows of the training images")
    data.add_argument("--val-list", metavar="CSV", help="path,label rows of the validation images")
    data.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read")
    add_decode_option(data)

    model = parser.add_argument_group("model")
    add_model_options(model)
    model.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                       help="start from random weights instead of the pretrained ones")
    model.add_argument("--input-size", nargs=2, type=image_side, metavar=("H", "W"),
                       help="training and validation size (default: the model's, 256 256 for most)")
    model.add_argument("--drop-path", type=_probability, default=default.drop_path, metavar="RATE",
                       help=f"stochastic depth rate (default {default.drop_path})")
    model.add_argument("--freeze-backbone", action="store_true", help="train the new head only (a linear probe)")
    model.add_argument("--grad-checkpointing", action="store_true",
                       help="recompute activations in the backward pass: less memory, about 30%% slower")

    optim = parser.add_argument_group("optimisation (AdamW, cosine schedule with linear warmup)")
    optim.add_argument("--epochs", type=positive, default=default.epochs, help=f"default {default.epochs}")
    optim.add_argument("--batch-size", type=positive, default=default.batch_size,
                       help=f"images per step and process (default {default.batch_size})")
    optim.add_argument("--lr", type=positive_number, default=default.lr,
                       help=f"peak learning rate (default {default.lr}, for fine-tuning a pretrained model; "
                       "train heads alone or from scratch at a larger one, e.g. 1e-3)")
    optim.add_argument("--min-lr", type=non_negative_number, default=default.min_lr,
                       help=f"final learning rate (default {default.min_lr})")
    optim.add_argument("--weight-decay", type=non_negative_number, default=default.weight_decay,
                       help="AdamW weight decay, not applied to norms, biases and layer scales "
                       f"(default {default.weight_decay})")
    optim.add_argument("--warmup-epochs", type=non_negative_number, default=default.warmup_epochs,
                       help=f"linear warmup, in epochs (default {default.warmup_epochs})")
    optim.add_argument("--layer-decay", type=_fraction, metavar="FACTOR",
                       help="layer-wise learning-rate decay: each layer below the head learns FACTOR times slower")
    optim.add_argument("--grad-accum", type=positive, default=1, metavar="N",
                       help="accumulate N batches per optimizer step (default 1)")
    optim.add_argument("--clip-grad", type=positive_number, metavar="NORM", help="clip the gradient norm")
    optim.add_argument("--smoothing", dest="label_smoothing", type=_probability, default=default.label_smoothing,
                       help=f"label smoothing (default {default.label_smoothing})")
    optim.add_argument("--model-ema", action="store_true",
                       help="validate and keep an exponential moving average of the weights")
    optim.add_argument("--model-ema-decay", type=_fraction, default=default.model_ema_decay,
                       help=f"default {default.model_ema_decay}")

    augment = parser.add_argument_group("augmentation (random resized crop, flip, colour jitter; RandAugment, "
                                        "random erasing, mixup, cutmix)")
    augment.add_argument("--scale", nargs=2, type=_probability, default=default.scale, metavar=("MIN", "MAX"),
                         help=f"area range of the random crops (default {default.scale[0]} {default.scale[1]})")
    augment.add_argument("--hflip", type=_probability, default=default.hflip,
                         help=f"horizontal flip probability (default {default.hflip}; 0 for text, digits)")
    augment.add_argument("--color-jitter", type=non_negative_number, default=default.color_jitter,
                         help=f"brightness, contrast and saturation jitter (default {default.color_jitter}; 0: off)")
    augment.add_argument("--aa", dest="auto_augment", type=_rand_augment, metavar="CONFIG",
                         help="RandAugment, as timm's config string (e.g. rand-m9-mstd0.5-inc1); replaces the "
                         "colour jitter")
    augment.add_argument("--reprob", type=_probability, default=default.reprob,
                         help="random erasing probability, after normalisation (default 0: off)")
    augment.add_argument("--remode", choices=ERASE_MODES, default=default.remode,
                         help=f"random erasing fill: const (0), rand (per channel), pixel (default {default.remode})")
    augment.add_argument("--recount", type=positive, default=default.recount,
                         help="erase 1 to this many rectangles (default 1)")
    augment.add_argument("--mixup", type=non_negative_number, default=0.0, metavar="ALPHA", help="mixup alpha (0: off)")
    augment.add_argument("--cutmix", type=non_negative_number, default=0.0, metavar="ALPHA",
                         help="cutmix alpha (0: off)")
    augment.add_argument("--mixup-prob", type=_probability, default=default.mixup_prob,
                         help=f"probability of mixing a batch (default {default.mixup_prob})")
    augment.add_argument("--mixup-switch-prob", type=_probability, default=default.mixup_switch_prob,
                         help=f"with both on, probability of cutmix (default {default.mixup_switch_prob})")

    execution = parser.add_argument_group("execution")
    execution.add_argument("--precision", choices=PRECISIONS, default="fp32",
                           help="fp32 (default); bf16 autocast (CPUs with native bf16, recent GPUs); fp16 (GPUs)")
    execution.add_argument("--amp", action="store_true", help="mixed precision: bf16, or fp16 on GPUs without bf16")
    execution.add_argument("--channels-last", action="store_true", help="channels-last tensors")
    execution.add_argument("--seed", type=non_negative, default=0, help="seed of every random draw (default 0)")
    execution.add_argument("--threads", type=positive, metavar="N",
                           help="intra-op threads of each training process (default: torch's, one per core); on a "
                           "machine whose cores other work also uses, fewer threads can be much faster")
    execution.add_argument("--workers", type=non_negative, metavar="N",
                           help="image decoding processes per training process (default: the CPUs shared among "
                           "the processes of this machine; 0 decodes in the main process)")
    execution.add_argument("--device", type=device,
                           help="cpu, cuda, cuda:N (default: this rank's GPU if any, else cpu)")
    execution.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")


# ----------------------------------------------------------------------------------------------
# fastvit validate
# ----------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from ..train.validate import validate_folder, write_reports

    model = load_model(args)
    result = validate_folder(model, args.folder, batch_size=args.batch_size, workers=args.workers,
                             device=args.device, precision=args.precision, decode=args.decode, backend=args.backend)
    evaluation = result.evaluation
    written = write_reports(Path(args.out), evaluation, result.classes, result.model_classes) if args.out else []
    if not evaluation.images:
        print(f"fastvit validate: error: none of the {len(result.skipped)} images could be read", file=sys.stderr)
        return EXIT_BAD_INPUTS
    summary = {
        "model": args.model, "checkpoint": args.checkpoint, "images": evaluation.images,
        "skipped": len(result.skipped), "top1": evaluation.top1, "top5": evaluation.top5,
        "loss": evaluation.loss, "images_per_second": round(evaluation.images_per_second, 1),
    }
    if args.json:
        print(json.dumps(summary | {"files": [str(path) for path in written]}, indent=2))
        return EXIT_OK
    for path, reason in result.skipped.items():
        print(f"fastvit validate: skipped {path}: {reason}", file=sys.stderr)
    print(f"top-1 {evaluation.top1:.2f}%  top-5 {evaluation.top5:.2f}%  loss {evaluation.loss:.4f}  "
          f"({evaluation.images} images, {evaluation.images_per_second:.1f} images/s)")
    if written:
        print(f"wrote {', '.join(str(path) for path in written)}")
    return EXIT_OK


def add_commands(commands) -> None:
    train = commands.add_parser(
        "train", help="fine-tune on a folder of labelled images",
        description="Fine-tune a FastViT on your classes: pretrained backbone, new head, AdamW with a cosine schedule; "
        "validates after every epoch and keeps the best weights (plain and fused).",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_arguments(train)
    train.set_defaults(run=cmd_train)

    validate = commands.add_parser(
        "validate", help="top-1, top-5, loss and per-class accuracy on labelled folders",
        description="Validate a model on DATA/<class>/* (or DATA/val/<class>/*, or the rows of a CSV list such as a "
        "run's val.csv) with its eval transform: weights "
        "written by fastvit train match folders by class name; ImageNet weights by WordNet synset folder "
        "(n01440764, ... as the ImageNet validation set is laid out).",
    )
    validate.add_argument("folder", metavar="DATA",
                          help="class folders of images, a folder with val/, or a CSV list of path,label "
                          "(a run's val.csv)")
    add_model_options(validate)
    validate.add_argument("--batch-size", type=positive, default=64, help="default 64")
    validate.add_argument("--workers", type=non_negative, metavar="N",
                          help="image decoding processes (default: the CPUs)")
    validate.add_argument("--device", type=device, help="cpu, cuda, cuda:N (default: a GPU if any, else cpu)")
    validate.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32", help="default fp32")
    validate.add_argument("--backend", choices=BACKENDS, default="torch", help="runtime (default torch)")
    add_decode_option(validate)
    validate.add_argument("--json", action="store_true", help="print the results as JSON")
    validate.add_argument("--out", metavar="DIR", help="write per_class.csv, confusion.csv and confusion.png here")
    validate.set_defaults(run=cmd_validate)
