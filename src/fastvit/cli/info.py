"""``fastvit list`` and ``fastvit info``: which models there are, and what one of them costs."""

from __future__ import annotations

import argparse
import json

from ..errors import FastViTError
from .common import image_side, print_table


def cmd_list(args: argparse.Namespace) -> None:
    from ..models.registry import list_models

    names = list_models(args.pattern or "", pretrained=args.pretrained)
    if not names:
        raise FastViTError(f"no model matches {args.pattern!r}; 'fastvit list' shows them all")
    for name in names:
        print(name)


def cmd_info(args: argparse.Namespace) -> None:
    from ..models.registry import get_pretrained_cfg, get_variant
    from ..models.stats import model_info

    variant = get_variant(args.model)
    cfg = get_pretrained_cfg(args.model)
    size = (3, *args.input_size) if args.input_size else None
    stats = model_info(args.model, size)
    if args.json:
        print(json.dumps({**stats.as_row(), "tags": list(variant.tags), "pretrained_cfg": cfg}, indent=2))
        return
    print_table([stats.as_row()])
    print(f"\ntags: {', '.join(f'{variant.name}.{tag}' for tag in variant.tags)} (default {variant.default_tag})")
    print(f"pretrained ({cfg['tag']}): {cfg['hf_hub_id']}, licence {cfg['license']}, "
          f"{cfg['num_classes']} outputs, crop_pct {cfg['crop_pct']}, {cfg['interpolation']}")
    if cfg["metrics"]:
        print(f"ImageNet-1k top-1 {cfg['metrics']['top1']:.2f} %, top-5 {cfg['metrics']['top5']:.2f} %")


def add_commands(commands) -> None:
    listing = commands.add_parser("list", help="list model names", description="List registered model names.")
    listing.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'fastvit_sa*'")
    listing.add_argument("--pretrained", action="store_true", help="list name.tag for every published weight set")
    listing.set_defaults(run=cmd_list)

    info = commands.add_parser(
        "info", help="params, GMACs, activations of a model",
        description="Parameters, GMACs and activations (computed), input size, tags and licence of a model.",
    )
    info.add_argument("model", help="model name or name.tag")
    info.add_argument("--input-size", nargs=2, type=image_side, metavar=("H", "W"), help="default: the model's own")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)
