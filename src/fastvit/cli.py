"""The ``fastvit`` command: parse arguments, call the library, print.

Heavy modules are imported inside the commands that need them, so ``fastvit --help`` and
``fastvit list`` start fast. Every expected failure ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import FastViTError

DEFAULT_MODEL = "fastvit_t8.apple_in1k"


def _print_table(rows: list[dict]) -> None:
    """A markdown table, so output pastes straight into notes and READMEs."""
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in headers) + " |")


def cmd_list(args: argparse.Namespace) -> None:
    from .registry import list_models

    for name in list_models(args.pattern or "", pretrained=args.pretrained):
        print(name)


def cmd_info(args: argparse.Namespace) -> None:
    from .registry import get_pretrained_cfg, get_variant
    from .stats import model_info

    variant = get_variant(args.model)
    cfg = get_pretrained_cfg(args.model)
    size = (3, *args.input_size) if args.input_size else None
    stats = model_info(args.model, size)
    if args.json:
        print(json.dumps({**stats.as_row(), "tags": list(variant.tags), "pretrained_cfg": cfg}, indent=2))
        return
    _print_table([stats.as_row()])
    print(f"\ntags: {', '.join(f'{variant.name}.{tag}' for tag in variant.tags)} (default {variant.default_tag})")
    print(f"pretrained ({cfg['tag']}): {cfg['hf_hub_id']}, licence {cfg['license']}, "
          f"{cfg['num_classes']} outputs, crop_pct {cfg['crop_pct']}, {cfg['interpolation']}")
    if cfg["metrics"]:
        print(f"ImageNet-1k top-1 {cfg['metrics']['top1']:.2f} %, top-5 {cfg['metrics']['top5']:.2f} %")


def _load_model(args: argparse.Namespace, **kwargs):
    from .registry import create_model

    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint_path=args.checkpoint, **kwargs)
    return model.eval()


def _load_batch(paths: Sequence[str], model):
    import torch

    from .data import create_transform, load_image, resolve_data_config

    transform = create_transform(**resolve_data_config(model=model))
    return torch.stack([transform(load_image(path)) for path in paths])


def cmd_predict(args: argparse.Namespace) -> None:
    import torch

    from .data import imagenet_classes

    model = _load_model(args)
    if model.num_classes != 1000:
        raise FastViTError(
            f"{args.model} outputs {model.num_classes} values that are not ImageNet classes; use 'fastvit embed'"
        )
    with torch.inference_mode():
        probs = model(_load_batch(args.images, model)).softmax(dim=-1)
    top = probs.topk(min(args.top_k, probs.shape[-1]))
    classes = imagenet_classes()
    results = [
        {
            "image": path,
            "top_k": [
                {"index": int(i), "label": classes[int(i)], "probability": round(float(p), 6)}
                for p, i in zip(values, indices)
            ],
        }
        for path, values, indices in zip(args.images, top.values, top.indices)
    ]
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top_k"], 1):
            print(f"  {rank}. {entry['probability'] * 100:6.2f}%  {entry['label']} ({entry['index']})")


def cmd_features(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    model = _load_model(args, features_only=True, out_indices=tuple(args.out_indices))
    with torch.inference_mode():
        maps = model(_load_batch([args.image], model))
    for index, feature_map in zip(model.out_indices, maps):
        print(f"stage {index}: {tuple(feature_map.shape[1:])} (reduction {model.feature_info.reduction(index)})")
    if args.out:
        np.savez(args.out, **{f"stage{i}": m[0].numpy() for i, m in zip(model.out_indices, maps)})
        print(f"wrote {args.out}")


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    model = _load_model(args)
    with torch.inference_mode():
        embeddings = model.forward_head(model.forward_features(_load_batch(args.images, model)), pre_logits=True)
    np.save(args.out, embeddings.numpy())
    print(f"wrote {args.out}: {len(args.images)} x {embeddings.shape[1]} embeddings")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or name.tag (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--checkpoint", metavar="PATH",
        help="local weights (.safetensors, .pth, .pth.tar, .pt) instead of downloading the pretrained ones",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastvit", description="FastViT image models: classify, extract features, embed, inspect."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list model names", description="List registered model names.")
    listing.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'fastvit_sa*'")
    listing.add_argument("--pretrained", action="store_true", help="list name.tag for every published weight set")
    listing.set_defaults(run=cmd_list)

    info = commands.add_parser(
        "info", help="params, GMACs, activations of a model",
        description="Parameters, GMACs and activations (computed), input size, tags and licence of a model.",
    )
    info.add_argument("model", help="model name or name.tag")
    info.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="default: the model's own")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)

    predict = commands.add_parser(
        "predict", help="top-k ImageNet classes of images",
        description="Classify images with the model's own eval transform; print the top-k classes.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_options(predict)
    predict.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(run=cmd_predict)

    features = commands.add_parser(
        "features", help="multi-scale feature maps of an image",
        description="Run the features_only model on one image; print each map's shape, optionally save them.",
    )
    features.add_argument("image", metavar="IMAGE")
    _add_model_options(features)
    features.add_argument("--out-indices", type=int, nargs="+", default=[0, 1, 2, 3], help="stages (default 0 1 2 3)")
    features.add_argument("--out", metavar="MAPS.npz", help="save the maps (one array per stage)")
    features.set_defaults(run=cmd_features)

    embed = commands.add_parser(
        "embed", help="pooled embeddings of images",
        description="Write the pooled pre-logits embedding of each image, in input order, to a .npy matrix.",
    )
    embed.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_options(embed)
    embed.add_argument("--out", required=True, metavar="EMB.npy", help="output matrix (N x num_features)")
    embed.set_defaults(run=cmd_embed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (FastViTError, ValueError, OSError) as error:
        print(f"fastvit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
