"""Every option of a training run, as one dataclass: written to ``config.json`` so that a run can be
repeated, and read back to resume one."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..data import DECODE_MODES
from ..errors import FastViTError

__all__ = ["CHANGEABLE_ON_RESUME", "PRECISIONS", "TrainConfig"]

PRECISIONS = ("fp32", "bf16", "fp16")
CHANGEABLE_ON_RESUME = ("data", "workers", "device", "quiet")
"""Options a resumed run may take anew: where the data is and how the run is executed, never what
is computed."""


@dataclass(frozen=True)
class TrainConfig:
    """The options of ``fastvit train`` (see its ``--help`` for each); defaults fine-tune a
    pretrained model."""

    out: str
    # data
    data: str | None = None
    val_split: float | None = None
    train_list: str | None = None
    val_list: str | None = None
    decode: str = "exact"
    # model
    model: str = "fastvit_t8.apple_in1k"
    checkpoint: str | None = None
    pretrained: bool = True
    drop_path: float = 0.0
    freeze_backbone: bool = False
    grad_checkpointing: bool = False
    input_size: tuple[int, int] | None = None
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    layer_decay: float | None = None
    grad_accum: int = 1
    clip_grad: float | None = None
    label_smoothing: float = 0.1
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    # augmentation
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # execution
    precision: str = "fp32"
    channels_last: bool = False
    seed: int = 0
    strict: bool = False
    threads: int | None = None
    workers: int | None = None
    device: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FastViTError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.decode not in DECODE_MODES:
            raise FastViTError(f"unknown decode mode {self.decode!r}; expected one of {', '.join(DECODE_MODES)}")
        if self.freeze_backbone and self.layer_decay is not None:
            raise FastViTError("--layer-decay has nothing to decay with --freeze-backbone (only the head learns)")
        for name, least in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("recount", 1), ("seed", 0),
                            ("threads", 1), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise FastViTError(f"{name} must be a whole number of at least {least}, got {value!r}")
        ranges = {  # name: (lowest, highest, whether the lowest is allowed)
            "lr": (0, math.inf, False), "min_lr": (0, math.inf, True), "weight_decay": (0, math.inf, True),
            "warmup_epochs": (0, math.inf, True), "drop_path": (0, 1, True), "label_smoothing": (0, 1, True),
            "model_ema_decay": (0, 1, False), "layer_decay": (0, 1, False), "clip_grad": (0, math.inf, False),
            "hflip": (0, 1, True), "color_jitter": (0, math.inf, True), "reprob": (0, 1, True),
            "mixup": (0, math.inf, True), "cutmix": (0, math.inf, True), "mixup_prob": (0, 1, True),
            "mixup_switch_prob": (0, 1, True),
        }
        for name, (lowest, highest, lowest_allowed) in ranges.items():
            value = getattr(self, name)
            if value is not None and not (lowest <= value <= highest and (lowest_allowed or value > lowest)):
                allowed = f"{'at least' if lowest_allowed else 'above'} {lowest}"
                allowed += "" if highest == math.inf else f" and at most {highest}"
                raise FastViTError(f"{name} must be {allowed}, got {value!r}")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise FastViTError(f"val_split must be between 0 and 1, got {self.val_split!r}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise FastViTError(f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale!r}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 32):
            raise FastViTError(f"input_size must be (height, width), each at least 32 pixels, got {self.input_size!r}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainConfig:
        known = {field.name for field in fields(cls)}
        tuples = {"input_size", "scale"}
        return cls(**{key: tuple(value) if key in tuples and value is not None else value
                      for key, value in values.items() if key in known})

    @classmethod
    def of_run(cls, run: Path) -> TrainConfig:
        """The options a run was started with (its ``config.json``)."""
        try:
            values = json.loads((run / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FastViTError(f"{run} is not a training run (it has no config.json)") from None
        except (OSError, json.JSONDecodeError) as error:
            raise FastViTError(f"cannot read {run / 'config.json'}: {error}") from None
        return replace(cls.from_json(values), out=str(run))
