"""Model names, pretrained tags and ``create_model``: timm's names and calling conventions."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import CheckpointError, UnknownModelError
from .network import FastVit, FastVitFeatures
from .reparam import reparameterize
from .variants import VARIANTS, Variant


def _natural_key(name: str) -> list:
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", name.lower())]


def _all_names(include_tags: bool) -> list[str]:
    if include_tags:
        return [f"{variant.name}.{tag}" for variant in VARIANTS.values() for tag in variant.tags]
    return list(VARIANTS)


def list_models(
    filter: str | Sequence[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Sequence[str] = (),
    include_tags: bool | None = None,
) -> list[str]:
    """Registered names matching the wildcard ``filter``; with ``pretrained`` only those with
    weights, as ``name.tag`` (set ``include_tags=False`` for bare names)."""
    include_tags = pretrained if include_tags is None else include_tags
    names = _all_names(include_tags)
    patterns = [filter] if isinstance(filter, str) else list(filter)
    if any(patterns):
        names = [n for n in names if any(fnmatch.fnmatch(n, p) or fnmatch.fnmatch(n.split(".")[0], p) for p in patterns)]
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in excludes)]
    return sorted(names, key=_natural_key)


def list_pretrained(filter: str = "") -> list[str]:
    return list_models(filter, pretrained=True)


def split_model_name_tag(name: str) -> tuple[str, str]:
    """'fastvit_t8.apple_in1k' -> ('fastvit_t8', 'apple_in1k'); a bare name gets tag ''."""
    arch, _, tag = name.partition(".")
    return arch, tag


def _unknown(name: str, candidates: list[str], what: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(candidates)}"
    return UnknownModelError(f"unknown {what} {name!r}{hint}")


def get_variant(name: str) -> Variant:
    arch, _ = split_model_name_tag(name)
    if arch not in VARIANTS:
        raise _unknown(name, _all_names(False) + _all_names(True), "model")
    return VARIANTS[arch]


def resolve_tag(name: str) -> tuple[Variant, str]:
    """The variant and the pretrained tag a name refers to (a bare name takes the default tag)."""
    variant = get_variant(name)
    _, tag = split_model_name_tag(name)
    tag = tag or variant.default_tag
    if tag not in variant.tags:
        raise _unknown(f"{variant.name}.{tag}", [f"{variant.name}.{t}" for t in variant.tags], "pretrained tag")
    return variant, tag


def get_pretrained_cfg(name: str) -> dict:
    """timm-style pretrained_cfg dict of ``name`` or ``name.tag``."""
    variant, tag = resolve_tag(name)
    return variant.tags[tag].to_dict(variant.name, tag)


HF_HUB_PREFIX = "hf-hub:"
"""Model names starting with this name a Hugging Face Hub repo: ``hf-hub:org/name[@revision]``."""


def _hub_pretrained_cfg(hub_id: str, cache_dir: str | os.PathLike[str] | None) -> tuple[Variant, dict]:
    """Variant and pretrained_cfg of an ``org/name[@revision]`` Hub repo, from its config.json.

    The repo's values win; fields it leaves empty (its ``first_conv`` is often null) come from
    our cfg of the same weights, or of the variant's default tag for weights we do not list.
    """
    from .hub import read_hub_config, split_hub_id

    repo_id, revision = split_hub_id(hub_id)
    config = read_hub_config(repo_id, revision, cache_dir)
    hub_cfg = config.get("pretrained_cfg", config)
    architecture = config.get("architecture") or hub_cfg.get("architecture")
    if not architecture:
        raise CheckpointError(f"config.json of Hugging Face Hub repo {repo_id!r} names no architecture")
    variant = get_variant(architecture)
    listed = [tag for tag, weights in variant.tags.items() if weights.hf_hub_id == repo_id]
    base = get_pretrained_cfg(f"{variant.name}.{listed[0]}" if listed else variant.name)
    if not listed:
        base.update(tag="", metrics={})
    cfg = {**base, **{key: tuple(v) if isinstance(v, list) else v for key, v in hub_cfg.items() if v is not None}}
    if "num_classes" in config:
        cfg["num_classes"] = config["num_classes"]
    cfg.update(architecture=variant.name, hf_hub_id=repo_id, hf_hub_revision=revision, source="hf-hub")
    return variant, cfg


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg: str | dict | None = None,
    pretrained_cfg_overlay: dict | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    scriptable: bool | None = None,
    exportable: bool | None = None,
    no_jit: bool | None = None,
    **kwargs,
) -> nn.Module:
    """Build a FastViT by timm name, e.g. ``create_model("fastvit_t8.apple_in1k", pretrained=True)``.

    ``model_name`` is ``variant``, ``variant.tag`` or ``hf-hub:org/name[@revision]`` (a Hub repo
    with a timm ``config.json``). Keyword arguments go to :class:`~fastvit.models.network.FastVit`
    (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``, ``drop_path_rate``,
    ``inference_mode``, ...). ``num_classes`` defaults to the loaded checkpoint's, else the
    pretrained tag's. ``features_only``
    returns the stage outputs selected by ``out_indices`` (indices, or an int for the last n; the
    first four by default, as in timm).

    Weights (see :mod:`fastvit.models.weights`): ``pretrained=True`` loads the tag's weights from the
    Hugging Face Hub cache (``cache_dir`` overrides HF_HUB_CACHE), downloading them if needed;
    ``pretrained_cfg_overlay=dict(file=PATH)`` loads a local file instead and
    ``dict(hf_hub_revision=REV)`` another revision. ``checkpoint_path=PATH`` loads a local file in
    place of any pretrained weights (timm loads both, one over the other); a file written by
    ``fastvit train`` also sets ``pretrained_cfg``'s ``label_names`` and the data config it was
    trained with (input size, mean, std, crop). Any published FastViT
    layout loads, strictly; the model is built on the meta device and takes the file's tensors.
    Fused (reparameterized) weights give a fused model; ``inference_mode=True`` folds unfused ones.

    As in timm, keyword arguments that are None are left out (scripts pass their unset options),
    ``pretrained_cfg`` is a tag or a dict over the default tag's cfg, and ``scriptable``,
    ``exportable`` and ``no_jit`` are accepted (FastViT has no layer they would change).
    """
    if not isinstance(model_name, str):
        raise TypeError(f"model_name is a model's name such as 'fastvit_t8', got {model_name!r}")
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    features_only = kwargs.pop("features_only", False)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    if model_name.startswith(HF_HUB_PREFIX):
        variant, cfg = _hub_pretrained_cfg(model_name[len(HF_HUB_PREFIX):], cache_dir)
    elif isinstance(pretrained_cfg, str):
        variant = get_variant(model_name)
        cfg = get_pretrained_cfg(f"{variant.name}.{pretrained_cfg}")
    else:
        variant, cfg = get_variant(model_name), {**get_pretrained_cfg(model_name), **(pretrained_cfg or {})}
    cfg = {**cfg, **(pretrained_cfg_overlay or {})}
    if checkpoint_path:  # weights written by fastvit train name their classes and preprocessing
        from .checkpoints import trained_cfg

        cfg.update(trained_cfg(checkpoint_path))
    classes_given = "num_classes" in kwargs or features_only
    kwargs.setdefault("num_classes", 0 if features_only else cfg["num_classes"])
    if pretrained or checkpoint_path:
        model = _create_with_weights(variant, cfg, checkpoint_path, cache_dir, not classes_given, **kwargs)
    else:
        model = FastVit(variant.arch, **kwargs)
    model.pretrained_cfg = cfg
    if features_only:
        model = FastVitFeatures(model, out_indices)
    return model


def _create_with_weights(
    variant: Variant,
    cfg: dict,
    checkpoint_path: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    classes_from_weights: bool,
    inference_mode: bool = False,
    **kwargs,
) -> FastVit:
    """Build unfused on the meta device (no wasted random init), load, then fold if asked:
    the weights decide the form they load in, and unfused weights fold exactly. Unless the caller
    chose ``num_classes``, the model takes the checkpoint's (a fine-tuned file just loads)."""
    from .weights import classifier_size, load_weights, read_weights

    state_dict, source = read_weights(cfg, checkpoint_path, cache_dir)
    if classes_from_weights:
        kwargs["num_classes"] = classifier_size(state_dict, cfg)
    with torch.device("meta"):
        model = FastVit(variant.arch, **kwargs)
    load_weights(model, state_dict, cfg, source=source)
    return reparameterize(model, inplace=True) if inference_mode else model
