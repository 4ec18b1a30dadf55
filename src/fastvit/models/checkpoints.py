"""Weights files: read any of them safely, and convert every published FastViT layout to timm's keys.

* :func:`read_checkpoint` reads safetensors, or a PyTorch file with ``torch.load(weights_only=True)``,
  so no code in a file ever runs;
* :func:`convert_state_dict` turns timm / HF Hub files, Apple's original ``ml-fastvit``
  checkpoints (unfused and fused), MobileCLIP v1 ``.pt`` image towers and OpenCLIP
  ``visual.trunk`` weights, with or without ``module.`` / ``_orig_mod.`` prefixes, into timm's keys.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from ..errors import CheckpointError, first_line

__all__ = [
    "FUSED_MARKER",
    "METADATA_CLASSES",
    "METADATA_DATA_CONFIG",
    "METADATA_MODEL",
    "apple_to_timm",
    "convert_state_dict",
    "is_fused",
    "listing",
    "read_checkpoint",
    "read_metadata",
    "trained_cfg",
]

_logger = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]

# Training checkpoints written by timm's train.py (Apple's included) store their argparse
# arguments next to the weights. A Namespace only holds plain values, so it may be rebuilt.
_SAFE_GLOBALS = [argparse.Namespace]
_SAFE_LOADING = (
    "PyTorch files are read with torch.load(weights_only=True), so that no code in a checkpoint ever "
    "runs; if you trust the file, save its state_dict with safetensors and load that"
)
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
"""Keys under which training checkpoints wrap their state dict; EMA weights first, as timm does."""
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes added by DistributedDataParallel and torch.compile."""
_TOWER_PREFIXES = {"visual.trunk.": "OpenCLIP image tower", "image_encoder.model.": "MobileCLIP image encoder"}
"""Prefixes of the FastViT image tower inside a full CLIP checkpoint."""
FUSED_MARKER = "stem.0.reparam_conv.weight"
"""Present in a state dict exactly when its weights are reparameterized (fused)."""
METADATA_MODEL = "fastvit.model"
METADATA_CLASSES = "fastvit.classes"
METADATA_DATA_CONFIG = "fastvit.data_config"
"""safetensors metadata keys of the weights ``fastvit train`` writes: the model name, the class
names in index order (a JSON list) and the preprocessing settings (a JSON object)."""
_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")

_APPLE_NAMES = {
    "patch_embed": "stem",
    "rbr_conv": "conv_kxk",
    "rbr_scale": "conv_scale",
    "rbr_skip": "identity",
    "conv_exp": "final_conv",
    "lkb_origin": "large_conv",
    "lkb_reparam": "reparam_conv",
    "convffn": "mlp",
    "pe": "pos_enc",
    "reduce": "fc1",
    "expand": "fc2",
}
"""Apple's module names (ml-fastvit, MobileCLIP) -> timm's, one key segment at a time."""
_APPLE_LAYER_SCALES = ("layer_scale", "layer_scale_1", "layer_scale_2")
"""Apple's bare layer-scale parameters; timm's are ``<name>.gamma``."""


def read_checkpoint(path: PathLike) -> StateDict:
    """The tensors of a weights file, whatever its name: safetensors, or a PyTorch file
    (``.pth``, ``.pth.tar``, ``.pt``, ``.bin``) read with ``torch.load(weights_only=True)``.

    A file that needs any code to unpickle is refused. A training checkpoint's state dict is
    taken from under ``state_dict_ema``, ``model_ema``, ``state_dict`` or ``model`` (that order).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    contents = _read_safetensors(path) if _is_safetensors(path) else _read_torch(path)
    return _unwrap_state_dict(contents, path)


def _is_safetensors(path: Path) -> bool:
    """safetensors files open with an 8-byte header length and then the JSON header."""
    with path.open("rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> StateDict:
    try:
        return load_safetensors(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error


def read_metadata(path: PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (string keys and values); empty for other files."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return {}
    try:
        with safe_open(path, framework="pt") as file:
            return dict(file.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error


def trained_cfg(path: PathLike) -> dict:
    """What a weights file written by ``fastvit train`` says about itself, as ``pretrained_cfg``
    entries: ``label_names`` and the data config it was trained with; empty for other files."""
    metadata = read_metadata(path)
    cfg: dict = {}
    try:
        if METADATA_CLASSES in metadata:
            cfg["label_names"] = tuple(json.loads(metadata[METADATA_CLASSES]))
        if METADATA_DATA_CONFIG in metadata:
            data_config = json.loads(metadata[METADATA_DATA_CONFIG])
            cfg.update({key: tuple(value) if isinstance(value, list) else value
                        for key, value in data_config.items() if key in _DATA_CONFIG_KEYS})
    except (json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"{path}: damaged fastvit metadata ({error})") from error
    return cfg


def _read_torch(path: Path) -> object:
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; earlier, plain data only
    try:
        with allow(_SAFE_GLOBALS) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        call = re.search(r"GLOBAL (\S+)", str(error))
        if call:
            raise CheckpointError(
                f"refusing to load {path}: unpickling it would call {call.group(1)}. {_SAFE_LOADING}"
            ) from error
        detail = re.search(r"Unsupported [^\n]*", str(error))
        raise CheckpointError(
            f"{path} is not a PyTorch or safetensors weights file that can be read safely"
            f" ({detail.group(0) if detail else first_line(error)}). {_SAFE_LOADING}"
        ) from error
    except (RuntimeError, EOFError, KeyError, ValueError, SafetensorError) as error:  # torch.load reads *.safetensors
        raise CheckpointError(f"{path} is not a PyTorch or safetensors weights file: {first_line(error)}") from error


def _unwrap_state_dict(contents: object, path: Path) -> StateDict:
    if isinstance(contents, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(contents.get(key), Mapping):
                _logger.info("using the weights under %r in %s", key, path)
                contents = contents[key]
                break
    if not isinstance(contents, Mapping) or not contents:
        raise CheckpointError(f"{path} holds no state dict (found {type(contents).__name__})")
    not_tensors = [key for key, value in contents.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path} is not a state dict: {listing(not_tensors)} are not tensors")
    return dict(contents)


# ----------------------------------------------------------------------------------------------
# Convert
# ----------------------------------------------------------------------------------------------


def is_fused(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a (timm-layout) state dict holds reparameterized weights."""
    return FUSED_MARKER in state_dict


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[StateDict, str]:
    """A state dict of any published FastViT layout in timm's keys, and the layout found.

    Strips DDP / torch.compile prefixes, keeps only the image tower of a CLIP checkpoint
    (``visual.trunk.``, ``image_encoder.model.``) and renames Apple's keys. A MobileCLIP
    ``head.proj`` matrix (applied as ``x @ proj``) becomes ``head.fc`` with a zero bias.
    """
    converted = {_strip_wrapper_prefixes(key): value for key, value in state_dict.items()}
    origin = ""
    for prefix, tower in _TOWER_PREFIXES.items():
        if any(key.startswith(prefix) for key in converted):
            converted = {key[len(prefix):]: value for key, value in converted.items() if key.startswith(prefix)}
            origin = f"{tower}, "
            break
    layout = "timm"
    if any(key.startswith("patch_embed.") for key in converted):
        converted, layout = apple_to_timm(converted), "Apple"
    form = "fused" if is_fused(converted) else "unfused"
    return converted, f"{origin}{layout} layout, {form}"


def _strip_wrapper_prefixes(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def apple_to_timm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Apple's keys (ml-fastvit unfused and ``_reparam`` checkpoints, MobileCLIP) -> timm's.

    Apple's network is a flat list: each stage's blocks, with a PatchEmbed (``network.N.proj``)
    and, on attention stages, a RepCPE (``network.N.pe``, fused ``network.N.reparam_conv``)
    between them. A stage begins at each PatchEmbed.
    """
    downsample_indices = sorted(
        {int(key.split(".")[1]) for key in state_dict if re.match(r"network\.\d+\.proj\.", key)}
    )
    converted = {}
    for key, value in state_dict.items():
        if key == "head.proj":
            converted["head.fc.weight"] = value.T.contiguous()
            converted["head.fc.bias"] = value.new_zeros(value.shape[1])
        else:
            converted[_apple_key_to_timm(key, downsample_indices)] = value
    return converted


def _apple_key_to_timm(key: str, downsample_indices: list[int]) -> str:
    parts = [_APPLE_NAMES.get(part, part) for part in key.split(".")]
    if parts[-1] in _APPLE_LAYER_SCALES:
        parts.append("gamma")
    if parts[0] == "head":
        parts.insert(1, "fc")
    elif parts[0] == "network":
        index, member = int(parts[1]), parts[2]
        stage = bisect.bisect_right(downsample_indices, index)
        container = {"proj": "downsample", "pos_enc": "pos_emb", "reparam_conv": "pos_emb"}.get(member, "blocks")
        parts = ["stages", str(stage), container, *parts[2:]]
    return ".".join(parts)


def listing(items: Sequence[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more

