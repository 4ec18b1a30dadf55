"""Everything a run needs before its first step: the output folder, the model (pretrained backbone,
new head sized to the classes), the checked data, the transforms and the device."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import create_transform, resolve_data_config
from ..data.transforms import Compose
from ..errors import FastViTError
from ..files import write_json_atomically
from ..models.checkpoints import is_fused
from ..models.registry import create_model
from ..runtime.devices import Ranks, decided_by_main, default_device, default_workers
from .checkpoints import check_resumable
from .config import TrainConfig
from .datasets import TrainingData, check_data_folder, find_training_data, write_list
from .metrics import write_errors

__all__ = ["Run", "prepare_run"]


@dataclass
class Run:
    """A run ready to train: ``network`` is ``model`` or its DistributedDataParallel wrapper;
    ``generator`` is the one the train transform draws from (reseeded per image)."""

    data: TrainingData
    model: nn.Module
    network: nn.Module
    device: torch.device
    data_config: dict[str, Any]
    train_transform: Compose
    eval_transform: Compose
    generator: torch.Generator
    workers: int


def prepare_run(config: TrainConfig, resumed: Mapping[str, Any] | None, ranks: Ranks) -> Run:
    """Check the output folder (or that the run's ``last.pt``, ``resumed``, fits the model and the
    data), build the model, find and check the data, then write ``config.json``, ``classes.txt``
    and ``val.csv`` (the validation images, for ``fastvit validate``) (rank 0). Errors found by
    rank 0 are raised on every rank, before anything is written."""
    device = torch.device(config.device) if config.device else default_device(ranks.local_rank)
    if config.channels_last and config.precision == "fp32" and device.type == "cpu":
        raise FastViTError(
            "--channels-last in fp32 on the CPU: torch's backward pass of the stem's 1x1 stride-2 convolution on "
            "channels-last tensors crashes the process (torch 2.13; timm's FastViT too); use it with --precision bf16, "
            "where it is fastest, or on a GPU"
        )
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if resumed is None:
        decided_by_main(ranks, lambda: _check_new_run(config))
    if config.data is not None:  # before the model, whose weights may take a while to come
        decided_by_main(ranks, lambda: check_data_folder(config.data))
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    if resumed is not None and "data_config" in resumed:  # last.pt holds the weights: none to fetch or read
        model = create_model(config.model, drop_path_rate=config.drop_path, inference_mode=is_fused(resumed["model"]))
        data_config = dict(resumed["data_config"])
    else:
        model = _pretrained_model(config)
        size = (3, *config.input_size) if config.input_size else None
        data_config = resolve_data_config(args={"input_size": size}, model=model)
    data = decided_by_main(ranks, lambda: find_training_data(
        config.data, val_split=config.val_split, train_list=config.train_list, val_list=config.val_list,
        seed=config.seed, input_size=tuple(data_config["input_size"][1:]), strict=config.strict,
    ))
    if resumed is not None:
        check_resumable(resumed, config.model, data.classes)
    if model.num_classes != len(data.classes):
        model.reset_classifier(len(data.classes))
    network = _prepare_model(model, config, device, ranks)
    torch.manual_seed(config.seed + ranks.rank)  # drop path: its own draws on each rank
    generator = torch.Generator()
    train_transform = create_transform(
        **data_config, is_training=True, scale=config.scale, hflip=config.hflip,
        color_jitter=config.color_jitter or None, auto_augment=config.auto_augment, re_prob=config.reprob,
        re_mode=config.remode, re_count=config.recount, generator=generator,
    )
    if ranks.is_main:
        _write_run_description(config, data)
    workers = default_workers(ranks.local_world_size) if config.workers is None else config.workers
    return Run(data, model, network, device, data_config, train_transform, create_transform(**data_config),
               generator, workers)


def _check_new_run(config: TrainConfig) -> None:
    out = config.out_dir
    if (out / "last.pt").exists():
        raise FastViTError(
            f"{out} holds a run already: continue it with fastvit train --resume {out}, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise FastViTError(f"--out {out} is a file, not a folder")


def _pretrained_model(config: TrainConfig) -> nn.Module:
    """The model with its starting weights and their own head (replaced once the classes are known)."""
    return create_model(
        config.model, pretrained=config.pretrained and config.checkpoint is None, checkpoint_path=config.checkpoint,
        drop_path_rate=config.drop_path,
    )


def _prepare_model(model: nn.Module, config: TrainConfig, device: torch.device, ranks: Ranks) -> nn.Module:
    """Freeze, checkpoint, place and wrap the model; return what runs the batches."""
    if config.freeze_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("head."))
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    if ranks.world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _write_run_description(config: TrainConfig, data: TrainingData) -> None:
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "config.json", config.to_json())
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in data.classes), encoding="utf-8")
    write_list(out / "val.csv", data.val, data.classes)
    if data.skipped:
        write_errors(out / "errors.csv", data.skipped)
