"""A run's record of progress: ``metrics.jsonl`` (one JSON object per epoch) and ``metrics.png``
(loss and accuracy curves, drawn with matplotlib, ``pip install 'fastvit[train]'``, imported only
here), both rewritten whole and atomically after each epoch; and ``errors.csv``, the files that
could not be read."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import replaced_atomically

__all__ = ["EpochMetrics", "plot_metrics", "write_errors", "write_metrics"]


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did. Losses are means over images; top-1 and top-5 are validation accuracies
    in percent; ``images_per_second`` counts training images (all processes) over the training
    time; ``seconds`` is the whole epoch, validation included."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    top1: float
    top5: float
    images_per_second: float
    seconds: float

    def summary(self, epochs: int) -> str:
        """One line for the terminal."""
        return (
            f"epoch {self.epoch}/{epochs}  lr {self.lr:.2e}  train loss {self.train_loss:.4f}  "
            f"val loss {self.val_loss:.4f}  top-1 {self.top1:.2f}%  top-5 {self.top5:.2f}%  "
            f"{self.images_per_second:.1f} img/s  {self.seconds:.1f} s"
        )


def write_metrics(path: Path, records: Sequence[EpochMetrics]) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text("".join(json.dumps(asdict(record)) + "\n" for record in records), encoding="utf-8")


def write_errors(path: Path, skipped: Mapping[str, str]) -> None:
    """``path,reason`` of each file that could not be read, sorted by path."""
    with replaced_atomically(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "reason"])
        writer.writerows(sorted(skipped.items()))


def plot_metrics(path: Path, records: Sequence[EpochMetrics], title: str) -> bool:
    """Draw the loss curves (left) and the validation accuracy (right) by epoch; return False
    without drawing when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    epochs = [record.epoch for record in records]
    figure, (losses, accuracy) = pyplot.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    losses.plot(epochs, [r.train_loss for r in records], marker=".", label="train (augmented, label-smoothed)")
    losses.plot(epochs, [r.val_loss for r in records], marker=".", label="validation")
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy.plot(epochs, [r.top1 for r in records], marker=".", label="top-1")
    accuracy.plot(epochs, [r.top5 for r in records], marker=".", label="top-5")
    best = max(records, key=lambda r: r.top1)
    accuracy.annotate(f"{best.top1:.2f}%", (best.epoch, best.top1), textcoords="offset points", xytext=(0, -14),
                      ha="center")
    accuracy.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for axes in (losses, accuracy):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
    return True
