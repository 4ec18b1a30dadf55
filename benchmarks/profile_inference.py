"""Where the time goes: torch.profiler's top ops for a Predictor, and ONNX Runtime's per-op profile
of the same network, on the synthetic weights of the test suite.

    python benchmarks/profile_inference.py fastvit_t8 --batch 1
    python benchmarks/profile_inference.py fastvit_t8 --batch 32 --compile

Also prints how much of a call is per-op dispatch cost rather than arithmetic: the same call on
a 32×32 input, where the convolutions have almost nothing to compute.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import fastvit  # noqa: E402
from conftest import synthetic_model  # noqa: E402
from fastvit.runtime.predictor import Predictor  # noqa: E402


def median_ms(fn, x, iters: int) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def ort_profile(model, batch: int, size: int, rows: int) -> None:
    try:
        import onnxruntime as ort

        from fastvit.runtime.export import export_onnx
    except ImportError:
        print("(onnxruntime not installed: no ONNX Runtime profile)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        # timm's fused graph (reparameterized only), as the benchmark's ONNX Runtime peer runs it
        export_onnx(fastvit.reparameterize(model), path, input_size=(3, size, size), dynamic_batch=True, fold=False,
                    check=False)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = torch.randn(batch, 3, size, size).numpy()
        runs = 10 if batch == 1 else 3
        for _ in range(runs):
            session.run(None, {"input": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / runs / 1e3
    total = sum(by_op.values())
    print(f"\nONNX Runtime on timm's fused graph, batch {batch}: {total:.1f} ms of kernels per call (profiling on)")
    for op, ms in by_op.most_common(rows):
        print(f"  {op:28s} {ms:8.2f} ms  {100 * ms / total:5.1f} %")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="fastvit_t8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="profile compile=True (oneDNN graph)")
    parser.add_argument("--engine", choices=("onednn", "eager"), default=None)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    model = synthetic_model(args.model)
    predictor = Predictor(model, compile=args.compile, engine=args.engine)
    x = torch.randn(args.batch, 3, args.size, args.size)
    tiny = torch.randn(args.batch, 3, 32, 32)
    call = median_ms(predictor, x, 20 if args.batch == 1 else 5)
    overhead = median_ms(predictor, tiny, 50)
    print(f"{predictor!r}\n{args.model}, batch {args.batch} at {args.size}×{args.size}: {call:.1f} ms per call; "
          f"the same call at 32×32 (dispatch cost, almost no arithmetic): {overhead:.1f} ms")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            predictor(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=45))
    ort_profile(model, args.batch, args.size, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
