"""Model names, pretrained tags and ``create_model``: timm's names and calling conventions."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence

from torch import nn

from .errors import UnknownModelError
from .model import FastVit, FastVitFeatures
from .variants import VARIANTS, PretrainedCfg, Variant


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


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


def _pretrained_cfg(name: str, overlay: dict | None) -> dict:
    cfg = get_pretrained_cfg(name)
    for key, value in (overlay or {}).items():
        if key not in cfg and key != "file":
            raise ValueError(f"unknown pretrained_cfg_overlay key {key!r}; known: {', '.join(cfg)}")
        cfg[key] = value
    return cfg


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg_overlay: dict | None = None,
    checkpoint_path: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | int = (0, 1, 2, 3),
    **kwargs,
) -> nn.Module:
    """Build a FastViT by timm name, e.g. ``create_model("fastvit_t8.apple_in1k", pretrained=True)``.

    Keyword arguments go to :class:`~fastvit.model.FastVit` (``num_classes``, ``in_chans``,
    ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``inference_mode``, ...). ``num_classes``
    defaults to the pretrained tag's. ``features_only`` returns the stage outputs selected by
    ``out_indices`` (indices, or an int for the last n; the first four by default, as in timm).
    """
    variant = get_variant(model_name)
    cfg = _pretrained_cfg(model_name, pretrained_cfg_overlay)
    kwargs.setdefault("num_classes", 0 if features_only else cfg["num_classes"])
    model = FastVit(variant.arch, **kwargs)
    model.pretrained_cfg = cfg
    if pretrained or checkpoint_path:
        from .weights import load_pretrained

        load_pretrained(model, cfg, checkpoint_path=checkpoint_path, pretrained=pretrained)
    if features_only:
        model = FastVitFeatures(model, out_indices)
    return model
