"""``fastvit benchmark``: our inference paths against timm, ONNX Runtime and OpenVINO on the same weights, in
one run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import image_side, positive


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``fastvit benchmark`` arguments, on ``parser`` (also used by ``benchmarks/inference.py``)."""
    from ..runtime.benchmark import DEFAULT_PATHS, PATHS
    from ..runtime.predictor import PRECISIONS

    parser.add_argument("model", nargs="?", default="fastvit_t8", help="model name (default fastvit_t8)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="use the pretrained weights (default: random)")
    weights.add_argument("--checkpoint", metavar="PATH", help="local weights file")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(DEFAULT_PATHS), metavar="PATH",
                        help=f"what to measure, of: {', '.join(PATHS)} (default: {' '.join(DEFAULT_PATHS)})")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="measure only the paths at these precisions (default: all; the fp32 reference and "
                        "the peers at their default precision always run)")
    parser.add_argument("--batch-sizes", nargs="+", type=positive, default=[1, 32], metavar="B")
    parser.add_argument("--input-size", nargs=2, type=image_side, metavar=("H", "W"))
    parser.add_argument("--threads", type=positive, help="intra-op threads (default: torch's, one per core)")
    parser.add_argument("--rounds", type=positive, default=8, help="round-robin rounds (default 8)")
    parser.add_argument("--timm-python", metavar="PYTHON",
                        help="an interpreter that has timm (and onnxruntime, openvino) for the peer paths")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument("--out", metavar="FILE.md", help="also write the markdown table to a file")
    return parser


def run_from_args(args: argparse.Namespace, state_dict: dict | None = None, command: str = ""):
    """Run the benchmark the arguments describe, print the table and write the files asked for."""
    from ..runtime.benchmark import PATHS, run_benchmark

    result = run_benchmark(
        args.model, state_dict=state_dict, pretrained=args.pretrained, checkpoint=args.checkpoint,
        paths=tuple(key for key in args.paths if PATHS[key].precision in (*args.precision, "default")),
        batch_sizes=tuple(sorted(set(args.batch_sizes))),
        input_size=(3, *args.input_size) if args.input_size else None, threads=args.threads, rounds=args.rounds,
        timm_python=args.timm_python, command=command,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    table = result.markdown()
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return result


def cmd_benchmark(args: argparse.Namespace) -> None:
    run_from_args(args, command="fastvit benchmark " + " ".join(sys.argv[2:]))


def add_commands(commands) -> None:
    benchmark = commands.add_parser(
        "benchmark", help="compare inference paths, timm, ONNX Runtime and OpenVINO in one run",
        description="Batch-1 latency, batch-32 throughput and peak memory of fastvit's inference paths, timm's "
        "fused model, ONNX Runtime and OpenVINO on the same weights, with the CPU's capabilities and matmul peaks "
        "in fp32 and bf16; prints a markdown table.",
    )
    add_arguments(benchmark)
    benchmark.set_defaults(run=cmd_benchmark)
