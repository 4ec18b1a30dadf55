"""Inference speed of FastViT on this CPU against timm and ONNX Runtime, on the same weights.

The weights are the deterministic synthetic ones of the test suite (tests/synthetic_weights.py:
real shapes, non-trivial BatchNorm statistics and layer scales), so nothing is downloaded and
every path, ours and the peers', computes the same function. This is ``fastvit benchmark`` with
those weights; the README's table comes from

    python benchmarks/inference.py fastvit_t8 --timm-python /path/to/python-with-timm

Options are those of ``fastvit benchmark`` (``--help``), plus ``--random-weights``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_weights.py
sys.path.insert(0, str(ROOT / "src"))

from fastvit.cli.benchmark import add_arguments, run_from_args  # noqa: E402
from fastvit.cli.common import Parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = add_arguments(Parser(prog="benchmarks/inference.py", description=__doc__.split("\n\n")[0]))
    parser.add_argument("--random-weights", action="store_true", help="the model's own random init instead")
    args = parser.parse_args(argv)
    state_dict = None
    if not (args.random_weights or args.pretrained or args.checkpoint):
        import torch

        import fastvit
        from synthetic_weights import synthetic_state_dict

        with torch.device("meta"):
            reference = fastvit.create_model(args.model).state_dict()
        state_dict = synthetic_state_dict(reference)
    run_from_args(args, state_dict=state_dict, command="python benchmarks/inference.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
