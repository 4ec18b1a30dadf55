"""Where the time goes: a Predictor's call split by stage (stem, each stage, the tail: final conv,
pooling and classifier), its per-call dispatch cost, torch.profiler's top ops of the uncompiled path
(copies and concatenations are the layout conversions), and the per-op profiles of ONNX Runtime and
OpenVINO on the same network, on the synthetic weights of the test suite.

    python benchmarks/profile_inference.py fastvit_t8 --batch 1
    python benchmarks/profile_inference.py fastvit_sa12 --batch 1 --precision bf16
    python benchmarks/profile_inference.py fastvit_t8 --batch 32 --no-compile

The dispatch cost is read from the same call on a 32×32 input, where the convolutions have
almost nothing to compute.
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
from fastvit.runtime.batching import segments  # noqa: E402
from fastvit.runtime.compiling import compile_module  # noqa: E402
from fastvit.runtime.export import export_onnx  # noqa: E402
from fastvit.runtime.onednn import OneDnnFusion  # noqa: E402
from fastvit.runtime.predictor import AUTO_COMPILE_CALLS, Predictor  # noqa: E402

from conftest import synthetic_model  # noqa: E402


def median_ms(fn, x, iters: int) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def print_ops(title: str, by_op: collections.Counter, rows: int) -> None:
    total = sum(by_op.values())
    print(f"\n{title}: {total:.1f} ms per call")
    for op, ms in by_op.most_common(rows):
        print(f"  {op:40s} {ms:8.2f} ms  {100 * ms / total:5.1f} %")


def stage_times(predictor: Predictor, x: torch.Tensor, compiled: bool, iters: int) -> None:
    """Each segment of the network timed alone on its real input (compiled, as the Predictor runs it)."""
    parts = segments(predictor.model, "forward")
    if parts is None:
        return
    names = ["stem", *(f"stage {i}" for i in range(len(parts) - 2)), "tail (final conv, pool, classifier)"]
    x = x.to(predictor.dtype).contiguous(memory_format=torch.channels_last)
    rows, total = [], 0.0
    with torch.inference_mode(), OneDnnFusion(enabled=compiled):
        for name, part in zip(names, parts):
            attention = any(type(m).__name__ == "FoldedAttention" for m in part.modules())
            run = compile_module(part, x, "onednn-graph") if compiled else part
            ms = median_ms(run, x, iters)
            rows.append((f"{name}{' (attention)' if attention else ''}", tuple(x.shape[1:]), ms))
            total += ms
            x = part(x)
    print(f"\nby stage ({'each compiled alone' if compiled else 'uncompiled'}), sum {total:.1f} ms:")
    for name, shape, ms in rows:
        print(f"  {name:44s} input {'x'.join(map(str, shape)):12s} {ms:7.2f} ms  {100 * ms / total:5.1f} %")


def ort_profile(model, batch: int, size: int, rows: int, threads: int) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("(onnxruntime not installed: no ONNX Runtime profile)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        # timm's fused graph (reparameterized only), as the benchmark's peers run it
        export_onnx(fastvit.reparameterize(model), path, input_size=(3, size, size), dynamic_batch=True, fold=False,
                    check=False)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.intra_op_num_threads = threads
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
    print_ops(f"ONNX Runtime on timm's fused graph, batch {batch}, kernels (profiling on)", by_op, rows)


def openvino_profile(predictor: Predictor, batch: int, size: int, rows: int, threads: int) -> None:
    """OpenVINO's per-node times (its Reorder nodes are its layout conversions) on our folded graph."""
    try:
        import openvino as ov

        from fastvit.runtime.backends.openvino import INFERENCE_PRECISIONS, export_openvino
    except ImportError:
        print("(openvino not installed: no OpenVINO profile)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.xml"
        export_openvino(predictor.model_for_export(), path, input_size=(3, size, size), batch_size=batch, fold=False,
                        check=False)
        config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[predictor.precision],
                  "INFERENCE_NUM_THREADS": threads}
        request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
        x = torch.randn(batch, 3, size, size).numpy()
        for _ in range(3):
            request.infer({0: x})
        runs = 10 if batch == 1 else 3
        by_op = collections.Counter()
        for _ in range(runs):
            request.infer({0: x})
            for info in request.profiling_info:
                by_op[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1e3 / runs
    print_ops(f"OpenVINO on our folded graph, {predictor.precision}, batch {batch}, per node", by_op, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="fastvit_t8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--no-compile", action="store_true", help="profile the uncompiled oneDNN engine")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    model = synthetic_model(args.model)
    predictor = Predictor(model, precision=args.precision, compile=False if args.no_compile else "auto")
    threads = torch.get_num_threads()
    x = torch.randn(args.batch, 3, args.size, args.size)
    tiny = torch.randn(args.batch, 3, 32, 32)
    iters = 20 if args.batch == 1 else 5
    for _ in range(AUTO_COMPILE_CALLS):  # reach the steady state: compiled for both shapes
        predictor(x), predictor(tiny)
    call, overhead = median_ms(predictor, x, iters), median_ms(predictor, tiny, 3 * iters)
    print(f"{predictor!r}\n{args.model}, batch {args.batch} at {args.size}×{args.size}: {call:.1f} ms per call; "
          f"the same call at 32×32 (dispatch cost, almost no arithmetic): {overhead:.1f} ms")
    stage_times(predictor, x, not args.no_compile, iters)

    uncompiled = Predictor(model, precision=args.precision, compile=False)
    uncompiled(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            uncompiled(x)
    by_op = collections.Counter({event.key: event.self_cpu_time_total / 5e3 for event in prof.key_averages()})
    print_ops("torch.profiler, uncompiled oneDNN engine, self CPU time", by_op, args.rows)
    ort_profile(model, args.batch, args.size, args.rows, threads)
    openvino_profile(predictor, args.batch, args.size, args.rows, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
