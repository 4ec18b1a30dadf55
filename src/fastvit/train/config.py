"""Every option of a training run, as one dataclass: written to ``config.json`` so that a run can be
repeated, and read back to resume one."""

from __future__ import annotations

import json
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
