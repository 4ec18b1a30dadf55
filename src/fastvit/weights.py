"""Pretrained weights: resolve, download, read, convert, load.

:func:`load_pretrained` is the path ``create_model(..., pretrained=True)`` takes:

1. **resolve** the weights file: ``checkpoint_path``, else ``cfg['file']``, else the Hugging Face
   Hub repo ``cfg['hf_hub_id']`` (``org/name`` or ``org/name@revision``; a ``cfg['hf_hub_revision']``
   takes precedence over the ``@revision``);
2. **download** it with ``huggingface_hub.hf_hub_download`` into the standard cache, so HF_HOME,
   HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN apply: ``model.safetensors`` if the repo has it,
   else ``pytorch_model.bin`` (or exactly ``cfg['hf_hub_filename']`` when set);
3. **read** it: safetensors, or ``torch.load(weights_only=True)``, so no code in a file ever runs;
4. **convert** any published layout to timm's keys: timm / HF Hub files, Apple's original
   ``ml-fastvit`` checkpoints (unfused and fused), MobileCLIP v1 ``.pt`` image towers and
   OpenCLIP ``visual.trunk`` weights, with or without ``module.`` / ``_orig_mod.`` prefixes;
5. **load** strictly: fused weights fold the model first; ``in_chans`` other than the
   checkpoint's adapts the first convs; a classifier of another size is left out (logged);
   anything else that does not fit raises :class:`~fastvit.errors.CheckpointError` naming the keys.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from .errors import CheckpointError, WeightsUnavailableError
from .model import FastVit
from .reparam import reparameterize

__all__ = [
    "HUB_WEIGHT_FILES",
    "adapt_input_conv",
    "apple_to_timm",
    "classifier_size",
    "convert_state_dict",
    "download_from_hub",
    "is_fused",
    "load_pretrained",
    "load_weights",
    "read_checkpoint",
    "read_hub_config",
    "read_weights",
    "resolve_weights_file",
    "split_hub_id",
]

_logger = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]

HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weight files looked for in a Hub repo, best first."""
_HUB_CONFIG_FILE = "config.json"
_LOCAL_FILE_HINT = (
    "pass a local weights file instead: create_model(name, checkpoint_path='path/to/weights.safetensors'), "
    "or --checkpoint PATH on the command line"
)

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
_FUSED_MARKER = "stem.0.reparam_conv.weight"
"""Present in a state dict exactly when its weights are reparameterized (fused)."""

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
_FUSED_BRANCH_CONV = re.compile(r"\.(conv_kxk\.\d+|conv_scale)\.conv$")


# ----------------------------------------------------------------------------------------------
# Resolve and download
# ----------------------------------------------------------------------------------------------


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``'org/name@revision'`` -> ``('org/name', 'revision')``; without ``@`` the revision is None (main)."""
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


def resolve_weights_file(
    cfg: Mapping, checkpoint_path: PathLike | None = None, cache_dir: PathLike | None = None
) -> Path:
    """The file to load: ``checkpoint_path``, else ``cfg['file']``, else the cfg's Hub weights
    (downloaded into the huggingface_hub cache, or found there)."""
    if checkpoint_path:
        return Path(checkpoint_path)
    if cfg.get("file"):
        return Path(cfg["file"])
    if not cfg.get("hf_hub_id"):
        raise CheckpointError(f"{_model_label(cfg)} has no pretrained weights to download; {_LOCAL_FILE_HINT}")
    repo_id, revision = split_hub_id(cfg["hf_hub_id"])
    revision = cfg.get("hf_hub_revision") or revision
    filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_WEIGHT_FILES
    return download_from_hub(repo_id, filenames, revision, cache_dir)


def download_from_hub(
    repo_id: str, filenames: Sequence[str], revision: str | None = None, cache_dir: PathLike | None = None
) -> Path:
    """Local path of the first of ``filenames`` that the repo holds, downloaded into the
    huggingface_hub cache unless it is there already.

    Raises :class:`~fastvit.errors.WeightsUnavailableError` when a file is neither cached nor
    downloadable (offline, or the Hub unreachable), and CheckpointError for an unknown repo or
    revision, or a repo holding none of the files.
    """
    not_cached = []
    for filename in filenames:
        cache_only = bool(not_cached)  # the Hub has proved out of reach: no more requests and retries
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=cache_only
            )
            return Path(path)
        except LocalEntryNotFoundError:
            not_cached.append(filename)
        except EntryNotFoundError:  # the Hub answered: this repo has no such file
            continue
        except (HfHubHTTPError, HFValidationError) as error:  # unknown or gated repo, bad revision or id
            raise CheckpointError(
                f"cannot download from Hugging Face Hub repo {repo_id!r}{_at(revision)}: {_first_line(error)}"
            ) from error
    if not_cached:
        raise WeightsUnavailableError(_unavailable_message(repo_id, revision, not_cached, cache_dir))
    raise CheckpointError(f"Hugging Face Hub repo {repo_id!r}{_at(revision)} has none of {', '.join(filenames)}")


def read_hub_config(repo_id: str, revision: str | None = None, cache_dir: PathLike | None = None) -> dict:
    """The ``config.json`` a timm Hub repo carries (``architecture``, ``num_classes``, ``pretrained_cfg``)."""
    path = download_from_hub(repo_id, (_HUB_CONFIG_FILE,), revision, cache_dir)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {_HUB_CONFIG_FILE} of {repo_id!r}: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{_HUB_CONFIG_FILE} of {repo_id!r} is not a JSON object")
    return config


def _unavailable_message(
    repo_id: str, revision: str | None, filenames: Iterable[str], cache_dir: PathLike | None
) -> str:
    cache = cache_dir or hub_constants.HF_HUB_CACHE
    reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_constants.is_offline_mode() else "the Hub cannot be reached"
    return (
        f"cannot get {' or '.join(filenames)} of Hugging Face Hub repo {repo_id!r}{_at(revision)}: {reason} "
        f"and the local cache ({cache}) does not hold it. Download it once while online, or {_LOCAL_FILE_HINT}"
    )


def _at(revision: str | None) -> str:
    return f" at revision {revision!r}" if revision else ""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _model_label(cfg: Mapping) -> str:
    return ".".join(part for part in (cfg.get("architecture"), cfg.get("tag")) if part) or "this model"


# ----------------------------------------------------------------------------------------------
# Read
# ----------------------------------------------------------------------------------------------


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
            f" ({detail.group(0) if detail else _first_line(error)}). {_SAFE_LOADING}"
        ) from error
    except (RuntimeError, EOFError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path} is not a PyTorch or safetensors weights file: {_first_line(error)}") from error


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
        raise CheckpointError(f"{path} is not a state dict: {_listing(not_tensors)} are not tensors")
    return dict(contents)


# ----------------------------------------------------------------------------------------------
# Convert
# ----------------------------------------------------------------------------------------------


def is_fused(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a (timm-layout) state dict holds reparameterized weights."""
    return _FUSED_MARKER in state_dict


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


# ----------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------


def load_pretrained(
    model: FastVit,
    cfg: Mapping | None = None,
    checkpoint_path: PathLike | None = None,
    cache_dir: PathLike | None = None,
) -> None:
    """Load ``model``'s pretrained weights (``cfg`` defaults to ``model.pretrained_cfg``), or the
    local file ``checkpoint_path`` instead of the cfg's. See :func:`load_weights` for the rules."""
    cfg = model.pretrained_cfg if cfg is None else cfg
    load_weights(model, *read_weights(cfg, checkpoint_path, cache_dir), cfg)


def read_weights(
    cfg: Mapping, checkpoint_path: PathLike | None = None, cache_dir: PathLike | None = None
) -> tuple[StateDict, str]:
    """The state dict of ``checkpoint_path``, else of the cfg's pretrained weights (downloaded if
    needed), as the file holds it, and the file's path for messages."""
    path = resolve_weights_file(cfg, checkpoint_path, cache_dir)
    return read_checkpoint(path), str(path)


def classifier_size(state_dict: Mapping[str, Tensor], cfg: Mapping) -> int:
    """How many classes the checkpoint's classifier has, in any layout; 0 if it has none."""
    converted, _ = convert_state_dict(state_dict)
    weight = converted.get(f"{cfg.get('classifier') or 'head.fc'}.weight")
    return 0 if weight is None else int(weight.shape[0])


def load_weights(
    model: FastVit, state_dict: Mapping[str, Tensor], cfg: Mapping | None = None, source: str = "state dict"
) -> None:
    """Load a state dict of any published layout into ``model``, strictly.

    - fused weights fold an unfused model first (:func:`fastvit.reparameterize`); unfused
      weights cannot go into a folded model (build it unfused, load, then fold);
    - first convs (``cfg['first_conv']``) trained on other input channels are adapted
      (:func:`adapt_input_conv`);
    - a classifier (``cfg['classifier']``) that does not match the model's is left out, with a
      log message; the model keeps its own (freshly initialised) one;
    - any other missing, unexpected or differently shaped key raises CheckpointError.

    A model built on the meta device takes the checkpoint's tensors (``assign=True``), in the
    model's dtypes; its classifier is initialised if the checkpoint's was left out.
    """
    cfg = model.pretrained_cfg if cfg is None else cfg
    model_name = cfg.get("architecture") or type(model).__name__
    state_dict, layout = convert_state_dict(state_dict)
    _logger.info("loading %s (%s) into %s", source, layout, model_name)
    fused = _match_fused_form(model, state_dict, source)
    expected = model.state_dict()
    _adapt_input_convs(state_dict, expected, _first_conv_names(cfg, fused))
    left_out = _leave_out_unfitting_classifier(state_dict, expected, cfg.get("classifier") or "head.fc")
    _check_fit(state_dict, expected, left_out, source, model_name)
    on_meta = any(tensor.is_meta for tensor in expected.values())
    if on_meta:
        state_dict = {key: _cast_like(value, expected[key]) for key, value in state_dict.items()}
    model.load_state_dict(state_dict, strict=False, assign=on_meta)
    if on_meta and left_out and model.num_classes:
        model.reset_classifier(model.num_classes)


def _match_fused_form(model: FastVit, state_dict: StateDict, source: str) -> bool:
    """Fold ``model`` if the weights are fused; return whether they are."""
    fused = is_fused(state_dict)
    model_fused = _FUSED_MARKER in model.state_dict()
    if fused and not model_fused:
        _logger.info("%s holds reparameterized (fused) weights: folding the model to its inference form", source)
        reparameterize(model, inplace=True)
    elif model_fused and not fused:
        raise CheckpointError(
            f"{source} holds unfused (train-time) weights but the model is already reparameterized: load them into "
            "the unfused model and fold it afterwards (create_model(..., inference_mode=True) does this)"
        )
    return fused


def _first_conv_names(cfg: Mapping, fused: bool) -> tuple[str, ...]:
    """The convs that see the input image: the cfg's ``first_conv``, or the one fused conv of their block."""
    names = cfg.get("first_conv") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    if fused:
        names = tuple(dict.fromkeys(_FUSED_BRANCH_CONV.sub(".reparam_conv", name) for name in names))
    return names


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """First-conv weights for ``in_chans`` input channels from weights trained on ``weight.shape[1]``.

    One channel gets the sum over the trained channels, so a grey image gets the response its
    three-channel copy would. More channels cycle through the trained ones, scaled by
    trained/in_chans so the summed response keeps its magnitude (timm's rule).
    """
    trained = weight.shape[1]
    work = weight.float()
    if in_chans == 1:
        adapted = work.sum(dim=1, keepdim=True)
    else:
        adapted = work.repeat(1, math.ceil(in_chans / trained), 1, 1)[:, :in_chans] * (trained / in_chans)
    return adapted.to(weight.dtype)


def _adapt_input_convs(state_dict: StateDict, expected: Mapping[str, Tensor], conv_names: Iterable[str]) -> None:
    for name in conv_names:
        key = f"{name}.weight"
        weight, target = state_dict.get(key), expected.get(key)
        if weight is None or target is None or weight.shape == target.shape:
            continue
        if weight.shape[:1] + weight.shape[2:] != target.shape[:1] + target.shape[2:]:
            continue  # not an input-channel difference: reported by _check_fit
        state_dict[key] = adapt_input_conv(weight, target.shape[1])
        _logger.info("adapted %s from %d to %d input channels", key, weight.shape[1], target.shape[1])


def _leave_out_unfitting_classifier(
    state_dict: StateDict, expected: Mapping[str, Tensor], classifier: str
) -> tuple[str, ...]:
    """Remove the checkpoint's classifier if the model has another number of classes (or none);
    return its keys. A classifier of another input width is left for :func:`_check_fit` to report."""
    keys = (f"{classifier}.weight", f"{classifier}.bias")
    weight, target = state_dict.get(keys[0]), expected.get(keys[0])
    if weight is None or (target is not None and target.shape[0] == weight.shape[0]):
        return ()
    for key in keys:
        state_dict.pop(key, None)
    if target is None:
        _logger.info(
            "the model has no classifier: the checkpoint's %s (%d classes) is not loaded", classifier, weight.shape[0]
        )
    else:
        _logger.warning(
            "the checkpoint's %s has %d classes and the model %d: the classifier is not loaded and keeps its "
            "random initialisation", classifier, weight.shape[0], target.shape[0],
        )
    return keys


def _check_fit(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor], left_out: Iterable[str], source: str, model: str
) -> None:
    """Raise one CheckpointError naming the missing, unexpected and reshaped keys (a few of each,
    then a count). BatchNorm counters (num_batches_tracked) may be absent."""
    allowed_missing = set(left_out)
    missing = [
        key for key in expected
        if key not in state_dict and key not in allowed_missing and not key.endswith(".num_batches_tracked")
    ]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = [
        f"{len(keys)} {what}: {_listing(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("keys of another shape (checkpoint vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit {model}: " + "; ".join(problems))


def _listing(items: Sequence[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _cast_like(value: Tensor, reference: Tensor) -> Tensor:
    if value.is_floating_point() and reference.is_floating_point():
        return value.to(reference.dtype)
    return value
