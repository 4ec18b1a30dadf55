"""Preprocessing settings of a model (input size, interpolation, mean/std, crop), as timm resolves them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..models.variants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["DEFAULT_CROP_MODE", "DEFAULT_CROP_PCT", "resolve_data_config", "resolve_model_data_config"]

_logger = logging.getLogger(__name__)

DEFAULT_CROP_PCT = 0.875
DEFAULT_CROP_MODE = "center"
DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_INTERPOLATION = "bicubic"


def resolve_data_config(
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    model: Any = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """The preprocessing settings of a model, as timm's ``resolve_data_config`` resolves them.

    Settings come from ``pretrained_cfg`` or, when that is not given, from ``model``: a module
    carrying a ``pretrained_cfg`` dict, or a model name such as ``"fastvit_t8.apple_in1k"``.
    Entries of ``args`` that are not None override both (``input_size``, ``img_size``,
    ``in_chans``/``chans``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).
    With ``use_test_size`` the cfg's ``test_input_size`` and ``test_crop_pct`` are preferred.

    Returns:
        A dict with ``input_size`` (C, H, W), ``interpolation``, ``mean``, ``std``, ``crop_pct``
        and ``crop_mode``, ready for ``create_transform(**config)``. Missing values take timm's
        defaults: (3, 224, 224), bicubic, ImageNet mean/std, crop_pct 0.875, crop_mode center.
    """
    args = {key: value for key, value in (args or {}).items() if value is not None}
    cfg = dict(pretrained_cfg) if pretrained_cfg else _model_pretrained_cfg(model)
    in_chans = args.get("chans", args.get("in_chans", DEFAULT_INPUT_SIZE[0]))
    input_size = _resolve_input_size(args, cfg, in_chans, use_test_size)
    if "input_size" in args:  # as in timm, a given input size sets the channels
        in_chans = input_size[0]
    config = {
        "input_size": input_size,
        "interpolation": args.get("interpolation") or cfg.get("interpolation") or DEFAULT_INTERPOLATION,
        "mean": _resolve_stats(args.get("mean"), cfg.get("mean"), IMAGENET_DEFAULT_MEAN, in_chans),
        "std": _resolve_stats(args.get("std"), cfg.get("std"), IMAGENET_DEFAULT_STD, in_chans),
        "crop_pct": args.get("crop_pct") or _cfg_value(cfg, "crop_pct", use_test_size) or DEFAULT_CROP_PCT,
        "crop_mode": args.get("crop_mode") or cfg.get("crop_mode") or DEFAULT_CROP_MODE,
    }
    if verbose:
        _logger.info("Data config: %s", ", ".join(f"{key}={value}" for key, value in config.items()))
    return config


def resolve_model_data_config(
    model: Any,
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """:func:`resolve_data_config` with the model first, as in timm."""
    return resolve_data_config(args, pretrained_cfg, model, use_test_size, verbose)


def _model_pretrained_cfg(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, str):
        from ..models.registry import get_pretrained_cfg  # imported here: the registry builds models

        return dict(get_pretrained_cfg(model))
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _cfg_value(cfg: Mapping[str, Any], key: str, use_test_size: bool) -> Any:
    """``cfg[key]``, or ``cfg['test_' + key]`` when asked for and present."""
    if use_test_size and cfg.get(f"test_{key}") is not None:
        return cfg[f"test_{key}"]
    return cfg.get(key)


def _resolve_input_size(
    args: Mapping[str, Any], cfg: Mapping[str, Any], in_chans: int, use_test_size: bool
) -> tuple[int, int, int]:
    if "input_size" in args:
        size = tuple(args["input_size"])
        if len(size) != 3:
            raise ValueError(f"input_size must be (channels, height, width), got {args['input_size']!r}")
        return size
    if "img_size" in args:
        return (in_chans, args["img_size"], args["img_size"])
    return tuple(_cfg_value(cfg, "input_size", use_test_size) or (in_chans, *DEFAULT_INPUT_SIZE[1:]))


def _resolve_stats(
    arg: Sequence[float] | None, cfg_value: Sequence[float] | None, default: tuple[float, ...], in_chans: int
) -> tuple[float, ...]:
    """Mean or std: the argument (one value is repeated per channel), else the cfg's, else default."""
    if arg is None:
        return tuple(cfg_value or default)
    values = tuple(float(v) for v in arg)
    if len(values) == 1:
        return values * in_chans
    if len(values) != in_chans:
        raise ValueError(f"expected 1 or {in_chans} normalisation values, got {len(values)}")
    return values


