"""A run's files of weights and state, each written atomically (a killed run never leaves half a file):

* ``last.pt``: everything a resumed run needs (model, optimizer, schedule position, EMA, epoch,
  step, random-generator states, metrics so far, best top-1), read back with
  ``torch.load(weights_only=True)``;
* ``best.safetensors``: the weights of the best validation top-1, in timm's keys, with the class
  names, the model name and the data config in the file's metadata (what ``create_model``,
  ``fastvit predict`` and ``fastvit validate`` read);
* ``fused.safetensors``: the same model reparameterized, ready to deploy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import FastViTError
from ..files import replaced_atomically
from ..models.checkpoints import METADATA_CLASSES, METADATA_DATA_CONFIG, METADATA_MODEL
from ..models.reparam import reparameterize

__all__ = ["RUN_FORMAT", "check_resumable", "load_state", "save_state", "save_weights", "weights_metadata"]

RUN_FORMAT = 1
"""Version of the layout of ``last.pt``; a run written by another version is not resumed."""


def weights_metadata(
    model_name: str, classes: Sequence[str], data_config: Mapping[str, Any], **extra: Any
) -> dict[str, str]:
    """safetensors metadata (strings only) naming what the weights are: timm's ``format`` key, the
    model name, the class names in index order and the data config, plus any ``extra`` values."""
    metadata = {
        "format": "pt",
        METADATA_MODEL: model_name,
        METADATA_CLASSES: json.dumps(list(classes)),
        METADATA_DATA_CONFIG: json.dumps(dict(data_config)),
    }
    metadata.update({f"fastvit.{key}": json.dumps(value) for key, value in extra.items()})
    return metadata


def _plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str], fused: bool = False) -> None:
    """Write ``model``'s weights (``fused``: reparameterized first, the model left as it is)."""
    if fused:
        model = reparameterize(model)
    with replaced_atomically(path) as temporary:
        save_file(_plain_state_dict(model), temporary, metadata=metadata)
        os.chmod(temporary, 0o644)  # safetensors creates its files readable by their owner only


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``last.pt`` (``state`` as :class:`~fastvit.train.loop.Trainer` gathers it)."""
    with replaced_atomically(path) as temporary:
        torch.save({"format": RUN_FORMAT, **state}, temporary)


def load_state(path: Path) -> dict[str, Any]:
    """Read a run's ``last.pt``; only plain data and tensors are accepted."""
    if not path.is_file():
        raise FastViTError(f"{path.parent} has no last.pt: no epoch of it finished, so there is nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure: the file is damaged
        raise FastViTError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise FastViTError(f"{path} was not written by this version of fastvit train")
    return state


def check_resumable(state: Mapping[str, Any], model_name: str, classes: Sequence[str]) -> None:
    """Refuse to resume a run with another model or other classes than it was trained on."""
    if state["model_name"] != model_name:
        raise FastViTError(f"the run was trained with model {state['model_name']}, not {model_name}")
    if list(state["classes"]) != list(classes):
        before, now = set(state["classes"]), set(classes)
        change = [f"{what}: {', '.join(sorted(names)[:5])}" for what, names in
                  (("new", now - before), ("missing", before - now)) if names]
        raise FastViTError(
            "the data's classes differ from the run's (" + ("; ".join(change) or "another order") + "): "
            "train a new run with --out"
        )
