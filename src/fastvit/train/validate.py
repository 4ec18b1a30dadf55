"""Validation: top-1, top-5, loss, per-class accuracy and the confusion matrix of a model on labelled
folders, computed by the :class:`~fastvit.runtime.predictor.Predictor` (the model's eval outputs,
folded and fast), in parallel over the processes of a torchrun launch.

Folder classes are matched to the model's classes by name when the weights name them (written by
``fastvit train``), by WordNet synset for ImageNet-1k weights (``n01440764/`` is class 0, so the
ImageNet validation set in synset folders reproduces the published top-1), or by sorted order when
there are as many folders as classes.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import create_decoder, imagenet_classes, imagenet_synsets, resolve_data_config
from ..errors import FastViTError
from ..files import replaced_atomically
from ..runtime.devices import Ranks, default_device, default_workers
from ..runtime.predictor import Predictor
from .batches import EpochOrder, LabelledImages, make_loader
from .datasets import find_validation_data

__all__ = ["Evaluation", "FolderValidation", "evaluate", "match_classes", "validate_folder", "write_reports"]

IMAGENET_CLASSES = 1000
TOP_K = 5


def match_classes(folders: Sequence[str], model_classes: Sequence[str] | None, num_classes: int) -> list[int]:
    """The model's class index of each folder class (see the module docstring for the rules).

    Raises:
        FastViTError: a folder the model has no class for, or no rule that applies.
    """
    if model_classes:
        index = {name: position for position, name in enumerate(model_classes)}
        unknown = [name for name in folders if name not in index]
        if unknown:
            shown = ", ".join(map(repr, model_classes[:6])) + (", ..." if len(model_classes) > 6 else "")
            raise FastViTError(f"class {unknown[0]!r} of the data is not one of the model's classes ({shown})")
        return [index[name] for name in folders]
    if num_classes == IMAGENET_CLASSES:
        synsets = {synset: position for position, synset in enumerate(imagenet_synsets())}
        unknown = [name for name in folders if name not in synsets]
        if not unknown:
            return [synsets[name] for name in folders]
        raise FastViTError(
            f"folder {unknown[0]!r} is not an ImageNet-1k synset id: for ImageNet weights name the class folders "
            "by WordNet synset (n01440764, ...), as the ImageNet validation set is laid out"
        )
    if len(folders) == num_classes:
        return list(range(num_classes))
    raise FastViTError(
        f"{len(folders)} class folders for a model of {num_classes} classes whose weights do not name them: "
        "validate with weights written by fastvit train (they carry the class names)"
    )


@dataclass
class Evaluation:
    """Counts of one validation pass. ``confusion[k, m]``: images of folder class ``k`` the model
    put in its class ``m``; ``targets[k]`` is the model class of folder class ``k``."""

    targets: Tensor
    confusion: Tensor
    top5_hits: Tensor  # per folder class
    loss_sum: float = 0.0
    seconds: float = 0.0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (image index, reason)

    @classmethod
    def empty(cls, targets: Sequence[int], num_classes: int) -> Evaluation:
        rows = len(targets)
        zeros = torch.zeros(rows, num_classes, dtype=torch.int64)
        return cls(torch.tensor(list(targets)), zeros, torch.zeros(rows, dtype=torch.int64))

    @property
    def images_per_class(self) -> Tensor:
        return self.confusion.sum(dim=1)

    @property
    def top1_hits(self) -> Tensor:
        return self.confusion.gather(1, self.targets.unsqueeze(1)).squeeze(1)

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return 100.0 * int(self.top1_hits.sum()) / max(self.images, 1)

    @property
    def top5(self) -> float:
        return 100.0 * int(self.top5_hits.sum()) / max(self.images, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def add(self, logits: Tensor, labels: Tensor) -> None:
        """Count a batch: ``labels`` are folder-class indices."""
        logits = logits.float().cpu()
        targets = self.targets[labels]
        self.loss_sum += float(F.cross_entropy(logits.double(), targets, reduction="sum"))
        predicted = logits.argmax(dim=1)
        self.confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
        top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
        hits = (top == targets.unsqueeze(1)).any(dim=1).long()
        self.top5_hits.index_add_(0, labels, hits)

    def merge(self, ranks: Ranks) -> None:
        """Sum the counts of every process (the time is the slowest one's)."""
        if ranks.world_size == 1:
            return
        totals = torch.cat([self.confusion.flatten(), self.top5_hits]).double()
        totals = torch.cat([totals, torch.tensor([self.loss_sum], dtype=torch.float64)])
        dist.all_reduce(totals)
        size = self.confusion.numel()
        self.confusion = totals[:size].round().long().view_as(self.confusion)
        self.top5_hits = totals[size:-1].round().long()
        self.loss_sum = float(totals[-1])
        slowest = torch.tensor([self.seconds], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        self.seconds = float(slowest)
        gathered: list[list[tuple[int, str]]] = [[] for _ in range(ranks.world_size)]
        dist.all_gather_object(gathered, self.failures)
        self.failures = sorted(failure for failures in gathered for failure in failures)


@torch.inference_mode()
def evaluate(
    forward: Callable[[Tensor], Tensor],
    batches,
    targets: Sequence[int],
    num_classes: int,
    to_float: Callable[[Tensor], Tensor] = lambda batch: batch,
) -> Evaluation:
    """Run ``forward`` (a Predictor, or any images -> logits callable) over ``batches`` of
    :class:`~fastvit.train.datasets.Batch` and count the results; ``targets`` maps folder classes
    to model classes, ``to_float`` turns a decoded batch into the model's input."""
    evaluation = Evaluation.empty(targets, num_classes)
    started = time.perf_counter()
    for batch in batches:
        evaluation.failures += batch.failures
        if batch.images is not None:
            evaluation.add(forward(to_float(batch.images)), batch.labels)
    evaluation.seconds = time.perf_counter() - started
    return evaluation


def write_reports(
    folder: Path, evaluation: Evaluation, classes: Sequence[str], model_classes: Sequence[str]
) -> list[Path]:
    """``per_class.csv`` (images, top-1, top-5 per folder class), ``confusion.csv`` (rows: true
    class; columns: predicted class among the folder classes, then ``(other)`` for the model's
    other classes) and, with matplotlib, ``confusion.png``; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    per_class = folder / "per_class.csv"
    images = evaluation.images_per_class.tolist()
    with replaced_atomically(per_class) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "model_index", "model_class", "images", "top1", "top5"])
        for row, name in enumerate(classes):
            target = int(evaluation.targets[row])
            writer.writerow([name, target, model_classes[target], images[row],
                             _percent(evaluation.top1_hits[row], images[row]),
                             _percent(evaluation.top5_hits[row], images[row])])
    matrix = _folder_confusion(evaluation)
    header = list(classes) + (["(other)"] if matrix.shape[1] > len(classes) else [])
    confusion = folder / "confusion.csv"
    with replaced_atomically(confusion) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *header])
        for name, counts in zip(classes, matrix.tolist()):
            writer.writerow([name, *counts])
    written = [per_class, confusion]
    if _plot_confusion(folder / "confusion.png", matrix, list(classes), header):
        written.append(folder / "confusion.png")
    return written


def _percent(hits: Tensor | int, total: int) -> str:
    return f"{100.0 * int(hits) / total:.2f}" if total else ""


def _folder_confusion(evaluation: Evaluation) -> Tensor:
    """The confusion matrix over the folder classes, with a last column of predictions outside
    them when the model has other classes."""
    columns = evaluation.confusion[:, evaluation.targets]
    if evaluation.confusion.shape[1] == len(evaluation.targets):
        return columns
    other = evaluation.images_per_class - columns.sum(dim=1)
    return torch.cat([columns, other.unsqueeze(1)], dim=1)


def _plot_confusion(path: Path, matrix: Tensor, rows: list[str], columns: list[str]) -> bool:
    """The confusion matrix as an image, each row as fractions of its images (False without
    matplotlib). Class names label the axes up to 40 classes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    fractions = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(16.0, 3.0 + 0.35 * len(columns))
    figure, axes = pyplot.subplots(figsize=(side, side * len(rows) / len(columns) + 1), constrained_layout=True)
    shown = axes.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    if len(columns) <= 40:
        axes.set_xticks(range(len(columns)), columns, rotation=90)
        axes.set_yticks(range(len(rows)), rows)
        if len(columns) <= 20:
            for (row, column), count in zip(((r, c) for r in range(len(rows)) for c in range(len(columns))),
                                            matrix.flatten().tolist()):
                if count:
                    axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                              color="white" if fractions[row, column] > 0.5 else "black")
    axes.set(xlabel="predicted class", ylabel="true class", title="confusion (fraction of each true class)")
    figure.colorbar(shown, ax=axes, shrink=0.8)
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
    return True


@dataclass(frozen=True)
class FolderValidation:
    """A validation of a model on class folders: the counts, the folder classes, the names of
    the model's classes and the files that could not be read (path -> reason)."""

    evaluation: Evaluation
    classes: tuple[str, ...]
    model_classes: list[str]
    skipped: dict[str, str]


def validate_folder(
    model: nn.Module,
    folder: str,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
    decode: str = "exact",
    backend: str = "torch",
) -> FolderValidation:
    """Validate ``model`` (its weights' eval transform and class names, see :func:`match_classes`)
    on ``folder/<class>/*``, ``folder/val/<class>/*`` or the rows of a CSV list (see
    :func:`~fastvit.train.datasets.find_validation_data`), with a :class:`Predictor` on ``backend``
    (the model is folded in place: pass a model you no longer train)."""
    classes, split = find_validation_data(folder)
    names = model.pretrained_cfg.get("label_names")
    targets = match_classes(classes, names, model.num_classes)
    if names is None:
        imagenet = model.num_classes == IMAGENET_CLASSES
        names = imagenet_classes() if imagenet else [str(index) for index in range(model.num_classes)]
    data_config = resolve_data_config(model=model)
    decoder = create_decoder(data_config, decode)
    device = device or default_device()
    workers = default_workers() if workers is None else workers
    loader = make_loader(LabelledImages(split, decoder), EpochOrder(len(split), 0, Ranks(), shuffle=False, pad=False),
                         batch_size, workers, pin_memory=device.type == "cuda")
    if backend != "torch":  # ONNX Runtime and OpenVINO run on the CPU
        device = torch.device("cpu")
    predictor = Predictor(model.to(device), precision=precision, backend=backend, input_size=data_config["input_size"],
                          inplace=True)
    predictor.expect(batch_size, len(loader))
    evaluation = evaluate(predictor, loader, targets, model.num_classes, decoder.to_float)
    skipped = {split.paths[index]: reason for index, reason in evaluation.failures}
    return FolderValidation(evaluation, classes, list(names), skipped)
