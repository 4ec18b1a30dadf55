"""Load weights into a model: the path ``create_model(..., pretrained=True)`` takes.

1. **resolve and download** the file (:mod:`fastvit.models.hub`);
2. **read and convert** it to timm's keys, whatever the published layout
   (:mod:`fastvit.models.checkpoints`);
3. **load** strictly: fused weights fold the model first; ``in_chans`` other than the
   checkpoint's adapts the first convs; a classifier of another size is left out (logged);
   anything else that does not fit raises :class:`~fastvit.errors.CheckpointError` naming the keys.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping

from torch import Tensor

from ..errors import CheckpointError
from .checkpoints import (
    FUSED_MARKER,
    convert_state_dict,
    is_fused,
    listing,
    read_checkpoint,
)
from .hub import resolve_weights_file
from .network import FastVit
from .reparam import reparameterize

__all__ = ["adapt_input_conv", "classifier_size", "load_pretrained", "load_weights", "read_weights"]

_logger = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]

_FUSED_BRANCH_CONV = re.compile(r"\.(conv_kxk\.\d+|conv_scale)\.conv$")


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
    model_fused = FUSED_MARKER in model.state_dict()
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
        f"{len(keys)} {what}: {listing(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("keys of another shape (checkpoint vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit {model}: " + "; ".join(problems))


def _cast_like(value: Tensor, reference: Tensor) -> Tensor:
    if value.is_floating_point() and reference.is_floating_point():
        return value.to(reference.dtype)
    return value
