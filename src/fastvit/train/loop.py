"""The training loop: epochs of optimizer steps over augmented batches, a validation pass after each,
and the run's files written atomically, so that a run killed at any moment resumes from its last
finished epoch to the same weights and metrics as an uninterrupted one (on the CPU, same seed).

Determinism comes from drawing every random choice from the seed and a position, never from the
order work happens in: the epoch's image order from (seed, epoch), each image's augmentation from
(seed, epoch, image) (so any number of decoding workers gives the same batches), mixup from (seed,
epoch, batch, rank); torch's global generator (drop path) is saved in ``last.pt`` with the rest.

Under ``torchrun`` each process trains on its share of every epoch (DistributedDataParallel; gloo
on the CPU, nccl on GPUs), validates its share, and rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data import ImageDecoder
from ..errors import FastViTError, ImageLoadError
from ..runtime.devices import Ranks
from ..runtime.precision import PrecisionNotSupportedError, bf16_is_native
from ..runtime.predictor import Predictor
from .batches import Batch, EpochOrder, LabelledImages, draw_seed, make_loader
from .checkpoints import load_state, save_state, save_weights, weights_metadata
from .config import TrainConfig
from .metrics import EpochMetrics, plot_metrics, write_errors, write_metrics
from .recipe import MixupCutmix, ModelEma, WarmupCosine, make_optimizer, parameter_groups, soft_cross_entropy
from .setup import Run, prepare_run
from .validate import Evaluation, evaluate

__all__ = ["Learner", "Trainer", "autocast"]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a precision on a device (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise FastViTError("--precision fp16 needs a GPU; on the CPU use bf16")
    if precision == "bf16" and device.type == "cpu" and not bf16_is_native():
        raise PrecisionNotSupportedError(
            "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 training would be many times slower than fp32"
        )
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


ALONE_IN_ITS_BATCH = "left alone in its batch by unreadable files: at this input size BatchNorm cannot train on one image"


class Learner:
    """One optimizer step at a time: forward under autocast, loss, backward (accumulated over
    ``grad_accum`` batches), clipping, the scheduled learning rate, AdamW and the EMA update.
    ``network`` is what runs (the model, or its DistributedDataParallel wrapper)."""

    def __init__(self, model: nn.Module, network: nn.Module, config: TrainConfig, total_steps: int,
                 warmup_steps: int, device: torch.device):
        self.model, self.network, self.config, self.device = model, network, config, device
        self.optimizer = make_optimizer(parameter_groups(model, config.weight_decay, config.layer_decay), config.lr)
        self.schedule = WarmupCosine(config.lr, total_steps, warmup_steps, config.min_lr)
        self.ema = ModelEma(model, config.model_ema_decay) if config.model_ema else None
        self.scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
        self.autocast = lambda: autocast(config.precision, device)
        self.autocast()  # refuses a precision this device cannot run now, not at the first batch
        self.step = 0  # optimizer steps taken
        self.lr = 0.0
        self.pending = 0  # batches accumulated since the last step
        self.group = config.grad_accum  # batches the current step accumulates

    def learn(self, images: Tensor, targets: Tensor, remaining: int | None = None) -> float:
        """Forward and backward one batch (``targets``: class indices, or class probabilities
        from mixup); step the optimizer when ``grad_accum`` batches are in. ``remaining`` (this
        batch and those after it in the epoch) makes the epoch's last step accumulate fewer when
        fewer are left, its loss the mean over those, as timm's train.py does. Returns the batch's loss."""
        if self.pending == 0:
            self.group = min(self.config.grad_accum, remaining or self.config.grad_accum)
        self.pending += 1
        stepping = self.pending == self.group
        syncing = stepping or not isinstance(self.network, nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if syncing else self.network.no_sync():
            with self.autocast():
                logits = self.network(images)
            if targets.is_floating_point():
                loss = soft_cross_entropy(logits, targets)
            else:
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
            scaled = loss / self.group
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if stepping:
            self._step()
        return float(loss.detach())

    def finish_epoch(self) -> None:
        """Step on the gradients still accumulated (the epoch's last batches could not be read), so
        that none carry into the next epoch: ``last.pt`` does not hold them."""
        if self.pending:
            self._step()

    def _step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.lr = self.schedule.apply(self.optimizer, self.step)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.pending = 0
        if self.ema is not None:
            self.ema.update(self.model, self.step)

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "lr": self.lr,
                 "scheduler": asdict(self.schedule)}
        if self.ema is not None:
            state["model_ema"] = self.ema.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.lr = state["step"], state["lr"]
        if self.ema is not None:
            self.ema.load_state_dict(state["model_ema"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: its metrics, the best epoch and the files it wrote."""

    metrics: list[EpochMetrics]
    best_epoch: int
    best_top1: float
    out: Path


class Trainer:
    """A training run (see the module docstring): ``Trainer(config).fit()``, or
    ``Trainer(TrainConfig.of_run(path), resume=True).fit()`` to continue an interrupted one."""

    def __init__(self, config: TrainConfig, resume: bool = False, ranks: Ranks | None = None,
                 progress: bool = False, log: Callable[[str], None] | None = None):
        self.ranks = ranks or Ranks.from_env()
        self.config, self.progress = config, progress
        quiet = config.quiet or not self.ranks.is_main
        self.log = (lambda message: None) if quiet else log or print
        state = load_state(config.out_dir / "last.pt") if resume else None
        self.run: Run = prepare_run(config, state, self.ranks)
        self.model, self.network, self.device = self.run.model, self.run.network, self.run.device
        self.skipped = dict(self.run.data.skipped)
        height, width = self.run.data_config["input_size"][1:]
        reduction = self.model.feature_info[-1]["reduction"]
        # BatchNorm cannot train on one value per channel: one image whose last map is a single pixel
        self.one_image_fails = not config.freeze_backbone and -(-height // reduction) * -(-width // reduction) == 1
        self._make_loaders()
        steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accum)
        self.learner = Learner(self.model, self.network, config, config.epochs * steps_per_epoch,
                               round(config.warmup_epochs * steps_per_epoch), self.device)
        self.mixup = MixupCutmix(len(self.run.data.classes), config.mixup, config.cutmix, config.mixup_prob,
                                 config.mixup_switch_prob, config.label_smoothing)
        self.metrics: list[EpochMetrics] = []
        self.start_epoch, self.best_top1, self.best_epoch = 0, -1.0, 0
        if state is not None:
            self._resume(state)

    def _make_loaders(self) -> None:
        config, data, run = self.config, self.run.data, self.run
        pin = self.device.type == "cuda"
        train_images = ImageDecoder(run.train_transform, config.decode)
        val_images = ImageDecoder(run.eval_transform, config.decode)
        self.train_to_float, self.val_to_float = train_images.to_float, val_images.to_float
        self.train_order = EpochOrder(len(data.train), config.seed, self.ranks, shuffle=True)
        train_set = LabelledImages(data.train, train_images, run.generator, config.seed)
        self.train_loader = make_loader(train_set, self.train_order, config.batch_size, run.workers, pin,
                                        drop_last=len(self.train_order) > config.batch_size)
        self.val_order = EpochOrder(len(data.val), config.seed, self.ranks, shuffle=False, pad=False)
        self.val_loader = make_loader(LabelledImages(data.val, val_images), self.val_order, config.batch_size,
                                      run.workers, pin)

    # -- resuming ---------------------------------------------------------------------------

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state)
        self.start_epoch = state["epoch"]
        self.metrics = [EpochMetrics(**record) for record in state["metrics"]]
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]
        self.skipped.update(state["skipped"])
        rng = state["rng"]
        if len(rng) == self.ranks.world_size:
            torch.set_rng_state(rng[self.ranks.rank]["cpu"])
            if "cuda" in rng[self.ranks.rank] and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng[self.ranks.rank]["cuda"], self.device)
        self.log(f"resuming {self.config.out} after epoch {self.start_epoch}/{self.config.epochs}")

    def _state(self, epoch: int, rng: list[dict]) -> dict:
        return {
            "model": self.model.state_dict(), **self.learner.state_dict(), "epoch": epoch,
            "model_name": self.config.model, "classes": list(self.run.data.classes),
            "data_config": dict(self.run.data_config), "config": self.config.to_json(), "metrics": [asdict(record) for record in self.metrics],
            "best_top1": self.best_top1, "best_epoch": self.best_epoch, "skipped": self.skipped, "rng": rng,
        }

    def _rng_states(self) -> list[dict]:
        own = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.ranks.world_size == 1:
            return [own]
        every: list[dict] = [{} for _ in range(self.ranks.world_size)]
        dist.all_gather_object(every, own)
        return every

    # -- epochs -----------------------------------------------------------------------------

    def fit(self) -> RunSummary:
        """Train the remaining epochs; return the summary."""
        if self.start_epoch >= self.config.epochs:
            self.log(f"{self.config.out} has finished all {self.config.epochs} epochs already")
        for epoch in range(self.start_epoch, self.config.epochs):
            started = time.perf_counter()
            train_loss, images, train_seconds = self._train_epoch(epoch)
            with self._rng_untouched():
                evaluation = self._validate()
            record = EpochMetrics(
                epoch=epoch + 1, lr=self.learner.lr, train_loss=train_loss, val_loss=evaluation.loss,
                top1=evaluation.top1, top5=evaluation.top5, images_per_second=images / train_seconds,
                seconds=time.perf_counter() - started,
            )
            with self._rng_untouched():
                self._end_epoch(record, evaluation)
        return RunSummary(self.metrics, self.best_epoch, self.best_top1, self.config.out_dir)

    def _rng_untouched(self) -> contextlib.AbstractContextManager:
        """Leave torch's generators as they were: folding a model for validation or for the fused
        weights builds new layers, whose initialisation would draw from them, and a resumed run
        must see the same draws as an uninterrupted one."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _set_train_mode(self) -> None:
        self.network.train()
        if self.config.freeze_backbone:  # a linear probe: the backbone's BatchNorm statistics stay as they are
            self.model.eval()
            self.model.get_classifier().train()

    def _train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One pass over the training images; returns the mean loss, the images (all processes)
        and the seconds it took."""
        self._set_train_mode()
        self.train_order.set_epoch(epoch)
        loss_sum, images, started = 0.0, 0, time.perf_counter()
        batches = len(self.train_loader)
        bar = tqdm(total=batches, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch", leave=False,
                   disable=not (self.progress and self.ranks.is_main), dynamic_ncols=True)
        for index, batch in enumerate(self.train_loader):
            self._note_failures(batch, self.run.data.train.paths)
            if batch.images is None:
                continue
            if len(batch.indices) == 1 and self.one_image_fails:  # left alone by unreadable files
                self.skipped[self.run.data.train.paths[batch.indices[0]]] = ALONE_IN_ITS_BATCH
                continue
            inputs, targets = self._inputs(batch, epoch, index)
            loss = self.learner.learn(inputs, targets, remaining=batches - index)
            loss_sum, images = loss_sum + loss * len(batch.indices), images + len(batch.indices)
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"loss {loss_sum / images:.4f}, {images * self.ranks.world_size / elapsed:.1f} img/s")
            bar.update()
        bar.close()
        self.learner.finish_epoch()
        totals = torch.tensor([loss_sum, images], dtype=torch.float64)
        if self.ranks.world_size > 1:
            dist.all_reduce(totals)
            for buffer in self.model.buffers():  # rank 0's BatchNorm statistics: the model it saves
                dist.broadcast(buffer, src=0)
        return float(totals[0] / max(totals[1], 1)), int(totals[1]), time.perf_counter() - started

    def _inputs(self, batch: Batch, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        images = self.train_to_float(batch.images).to(self.device, non_blocking=True, memory_format=memory_format)
        labels = batch.labels.to(self.device, non_blocking=True)
        if not self.mixup.enabled:
            return images, labels
        rng = np.random.default_rng(draw_seed(self.config.seed, epoch, index, self.ranks.rank))
        return self.mixup(images, labels, rng)

    def _note_failures(self, batch: Batch, paths: tuple[str, ...]) -> None:
        for index, reason in batch.failures:
            if self.config.strict:
                raise ImageLoadError(paths[index], reason)
            self.skipped[paths[index]] = reason

    def _validate(self) -> Evaluation:
        weights = self.learner.ema.module if self.learner.ema is not None else self.model
        predictor = Predictor(weights, input_size=self.run.data_config["input_size"], compile=False)
        classes = len(self.run.data.classes)
        evaluation = evaluate(predictor, self.val_loader, range(classes), classes, self.val_to_float)
        for index, reason in evaluation.failures:
            self.skipped[self.run.data.val.paths[index]] = reason
        evaluation.merge(self.ranks)
        return evaluation

    def _end_epoch(self, record: EpochMetrics, evaluation: Evaluation) -> None:
        """Keep the record; write the best weights if they are, then ``last.pt``, the metrics and
        the errors (rank 0)."""
        self.metrics.append(record)
        improved = record.top1 > self.best_top1
        if improved:
            self.best_top1, self.best_epoch = record.top1, record.epoch
        rng = self._rng_states()
        if self.ranks.world_size > 1:
            gathered: list[dict] = [{} for _ in range(self.ranks.world_size)]
            dist.all_gather_object(gathered, self.skipped)
            self.skipped = {path: reason for skipped in gathered for path, reason in skipped.items()}
        if not self.ranks.is_main:
            return
        out = self.config.out_dir
        if improved:
            weights = self.learner.ema.module if self.learner.ema is not None else self.model
            metadata = weights_metadata(self.config.model, self.run.data.classes, self.run.data_config,
                                        epoch=record.epoch, top1=record.top1)
            save_weights(out / "best.safetensors", weights, metadata)
            save_weights(out / "fused.safetensors", weights, metadata, fused=True)
        save_state(out / "last.pt", self._state(record.epoch, rng))
        write_metrics(out / "metrics.jsonl", self.metrics)
        if self.skipped:
            write_errors(out / "errors.csv", self.skipped)
        data = self.config.data or self.config.train_list
        plot_metrics(out / "metrics.png", self.metrics, f"{self.config.model} on {data}")
        self.log(record.summary(self.config.epochs) + ("  (best)" if improved else ""))
