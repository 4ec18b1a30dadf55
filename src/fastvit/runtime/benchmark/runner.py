"""CPU inference benchmark: our paths against timm and ONNX Runtime, on the same weights, in one run.

``fastvit benchmark NAME`` (or ``benchmarks/inference.py NAME``) measures, for one model:

* **fastvit** paths: the plain fused model (``eager``), the folded model in channels-last
  (``channels_last``), the default :class:`~fastvit.Predictor` (``default``), the
  Predictor with ``compile=True`` (``compile``) and, on request, ``compile='inductor'``
  (``inductor``), bf16 (``bf16``), and the ONNX Runtime backend (``ort_backend``);
* **timm**'s fused model (``reparameterize_model``), NCHW and channels-last, when timm can be
  imported here or by ``--timm-python``;
* **ONNX Runtime** (default session options) on timm's fused export (``ort``), or on our
  reparameterized-only export, which is the same graph, when timm is not available;
* the machine's own **fp32 and bf16 matmul rate** (``torch.mm`` on large square matrices), so
  every result also reads as a fraction of what the CPU does at best.

Each path runs in its own worker process, so thread pools, allocator state and peak memory do not
leak between paths. The workers take turns (round robin, with a pause between turns), so slow
phases of a shared machine hit every path alike; CPU time used by other processes during the
measurements is reported. Batch-1 latency is the median over many timed calls after warm-up;
batch-B throughput is B over the median time of a batch-B call. Peak memory is the worker's peak
resident set while running a batch, minus its resident set before the model was built.

The workers are :mod:`.worker` processes; this module orchestrates them and :mod:`.report` formats
the results.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .report import REFERENCE_PATH, BenchmarkResult, PathResult
from .worker import PathSpec, export_fused_onnx

__all__ = ["DEFAULT_PATHS", "PATHS", "run_benchmark"]

WORKER_SCRIPT = Path(__file__).resolve().with_name("worker.py")

PATHS: dict[str, PathSpec] = {
    spec.key: spec
    for spec in (
        PathSpec("eager", "fastvit fused, eager NCHW (= timm's fused graph)", "fastvit", {"mode": "fused"}),
        PathSpec("channels_last", "fastvit folded, eager channels-last", "fastvit",
                 {"mode": "predictor", "engine": "eager", "micro_batch": 0}),
        PathSpec("default", "**fastvit Predictor, fp32 default**", "fastvit", {"mode": "predictor"}),
        PathSpec("compile", "fastvit Predictor, compile=True (oneDNN graph)", "fastvit",
                 {"mode": "predictor", "compile": True}),
        PathSpec("inductor", "fastvit Predictor, compile='inductor' (whole batch)", "fastvit",
                 {"mode": "predictor", "compile": "inductor", "micro_batch": 0}),
        PathSpec("bf16", "fastvit bf16", "fastvit", {"mode": "bf16"}),
        PathSpec("ort_backend", "fastvit Predictor, backend='onnxruntime'", "fastvit",
                 {"mode": "predictor", "backend": "onnxruntime"}),
        PathSpec("timm", "timm fused, NCHW", "timm", {}),
        PathSpec("timm_cl", "timm fused, channels-last", "timm", {"channels_last": True}),
        PathSpec("ort", "ONNX Runtime on the fused export", "ort", {}),
    )
}
DEFAULT_PATHS = ("eager", "channels_last", "default", "compile", "bf16", "ort_backend", "timm", "timm_cl", "ort")


class _WorkerProcess:
    def __init__(self, key: str, python: str, env: dict | None = None):
        self.key = key
        self.proc = subprocess.Popen(
            [python, "-u", str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )

    def ask(self, timeout: float | None = None, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.key} died: {self.proc.stderr.read()[-2000:]}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"worker {self.key}: {reply.get('error')}\n{reply.get('trace', '')}")
        return reply

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()


def _measure_matmul(env: dict) -> dict[str, float]:
    """fp32 and bf16 matmul GFLOP/s, in a fresh worker with torch's default threads."""
    worker = _WorkerProcess("matmul", sys.executable, env)
    try:
        return {r["dtype"]: r["gflops"] for r in worker.ask(op="matmul", dtypes=["float32", "bfloat16"])["rates"]}
    finally:
        worker.close()


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def _interpreter_has(python: str, module: str) -> bool:
    if python == sys.executable:
        import importlib.util

        return importlib.util.find_spec(module) is not None
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def run_benchmark(
    name: str = "fastvit_t8",
    *,
    state_dict: dict | None = None,
    pretrained: bool = False,
    checkpoint: str | None = None,
    paths: tuple[str, ...] = DEFAULT_PATHS,
    batch_sizes: tuple[int, ...] = (1, 32),
    input_size: tuple[int, int, int] | None = None,
    threads: int | None = None,
    rounds: int = 8,
    latency_iters: int = 10,
    timm_python: str | None = None,
    bf16_budget_s: float = 60.0,
    command: str = "",
    log=print,
) -> BenchmarkResult:
    """Measure every path in ``paths`` on one model and the same weights; see the module docstring.

    Weights: ``state_dict`` (timm layout) if given, else ``checkpoint``, else the pretrained ones
    when ``pretrained``, else the model's own random initialisation (speed does not depend on
    the values). ``timm_python`` is an interpreter with timm (default: this one, if it has timm).
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    import fastvit
    from fastvit.runtime.precision import bf16_is_native
    from fastvit.runtime.predictor import AUTO_COMPILE_CALLS
    from fastvit.models.stats import count_ops

    started = time.perf_counter()
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}; known: {', '.join(PATHS)}")
    if REFERENCE_PATH not in paths:
        paths = (REFERENCE_PATH, *paths)
    model = fastvit.create_model(name, pretrained=pretrained and checkpoint is None, checkpoint_path=checkpoint)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    if model.num_classes == 0:
        raise ValueError("benchmark a model with a classifier (num_classes > 0)")
    size = tuple(input_size or model.pretrained_cfg.get("input_size") or (3, 256, 256))
    macs, _ = count_ops(fastvit.reparameterize(model), size)
    gflop = 2 * macs / 1e9
    threads = threads or torch.get_num_threads()

    timm_python = timm_python or sys.executable
    have_timm = _interpreter_has(timm_python, "timm")
    ort_python = sys.executable if _interpreter_has(sys.executable, "onnxruntime") else timm_python
    have_ort = _interpreter_has(ort_python, "onnxruntime")

    workdir = Path(tempfile.mkdtemp(prefix="fastvit-bench-"))
    weights = workdir / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    onnx_path = workdir / "fused.onnx"
    results: dict[str, PathResult] = {}
    workers: dict[str, _WorkerProcess] = {}
    env = {"PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(fastvit.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p)}
    common = {"name": name, "num_classes": model.num_classes, "input_size": list(size), "weights": str(weights),
              "threads": threads, "workdir": str(workdir), "pretrained_cfg": model.pretrained_cfg}
    try:
        # The ORT peer's graph: timm's fused export when timm is here, else our fused-only export.
        ort_source = None
        if "ort" in paths and have_ort:
            if have_timm:
                exporter = _WorkerProcess("ort-export", timm_python, env)
                fused_weights = workdir / "timm-fused.safetensors"
                try:
                    reply = exporter.ask(op="setup", spec=vars(PATHS["timm"]), export_onnx=str(onnx_path),
                                         save_fused=str(fused_weights), **common)
                finally:
                    exporter.close()
                ort_source = reply["exported"]
                if not ort_source:  # timm could not export here: its fused weights in the identical graph
                    from safetensors.torch import load_file

                    with torch.device("meta"):
                        fused = fastvit.create_model(name, num_classes=model.num_classes, inference_mode=True)
                    fused.load_state_dict(load_file(str(fused_weights)), strict=True, assign=True)
                    export_fused_onnx(fused.eval(), size, onnx_path)
                    ort_source = "timm's fused weights (graph exported by fastvit: timm's env lacks onnx)"
            else:
                export_fused_onnx(fastvit.reparameterize(model), size, onnx_path)
                ort_source = "fastvit's fused export (timm not available)"

        for key in paths:
            spec = PATHS[key]
            result = results[key] = PathResult(key, spec.label)
            if spec.runtime == "timm" and not have_timm:
                result.error = f"skipped: timm not importable by {timm_python}"
                continue
            if (spec.runtime == "ort" or spec.options.get("backend") == "onnxruntime") and not have_ort:
                result.error = "skipped: onnxruntime not installed (pip install 'fastvit[onnx]')"
                continue
            python = {"timm": timm_python, "ort": ort_python}.get(spec.runtime, sys.executable)
            if spec.runtime == "ort":
                result.label = f"{spec.label.replace('the fused export', ort_source)}"
            log(f"setting up {key} ...")
            worker = _WorkerProcess(key, python, env)
            try:
                reply = worker.ask(op="setup", spec=vars(spec), onnx=str(onnx_path), **common)
                result.setup_s = reply["build_s"]
                result._base_rss = reply["base_rss_kib"]
                workers[key] = worker
            except RuntimeError as error:
                result.error = str(error).splitlines()[0][:200]
                worker.close()

        bf16_slow = "bf16" in workers and not bf16_is_native()
        matmul = _measure_matmul(env)

        # Warm-up and first-call time per batch size, and the output check.
        for key, worker in list(workers.items()):
            result = results[key]
            try:
                for batch in batch_sizes:
                    if key == "bf16" and bf16_slow and batch > 1:
                        continue
                    # enough calls for the default predictor to reach its steady (auto-compiled) state
                    warm = worker.ask(op="warm", batch=batch, seconds=1.0 if batch == 1 else 0.0,
                                      min_iters=1 if (key == "bf16" and bf16_slow) else AUTO_COMPILE_CALLS + 1)
                    if batch == min(batch_sizes):
                        result.first_call_s = warm["first_call_s"]
                worker.ask(op="check", batch=1 if key == "bf16" and bf16_slow else 2,
                           out=str(workdir / f"check-{key}.npy"))
            except RuntimeError as error:
                result.error = str(error).splitlines()[0][:200]
                worker.close()
                del workers[key]
        reference = np.load(workdir / f"check-{REFERENCE_PATH}.npy")
        for key in workers:
            out = np.load(workdir / f"check-{key}.npy")
            ref = reference[: len(out)]
            results[key].max_abs_diff = float(np.abs(out - ref).max())
            results[key].top1_agree = float((out.argmax(-1) == ref.argmax(-1)).mean())

        # Round robin.
        busy0, total0 = _machine_busy_seconds()
        ours0 = sum(w.cpu_seconds() for w in workers.values())
        for batch in batch_sizes:
            iters = latency_iters if batch == 1 else 1
            for round_index in range(rounds if batch == 1 else max(3, rounds // 2)):
                for key, worker in workers.items():
                    if key == "bf16" and bf16_slow:
                        continue
                    time.sleep(0.1)  # let spinning thread pools of the previous worker settle
                    reply = worker.ask(op="time", batch=batch, iters=iters)
                    results[key].batch_ms.setdefault(batch, []).extend(t * 1e3 for t in reply["times"])
                    if reply.get("peak_rss_kib") is not None:
                        peak = (reply["peak_rss_kib"] - results[key]._base_rss) / 1024
                        results[key].peak_mib[batch] = max(results[key].peak_mib.get(batch, 0.0), peak)
            log(f"batch {batch} done")
        busy1, total1 = _machine_busy_seconds()
        ours1 = sum(w.cpu_seconds() for w in workers.values())
        foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(total1 - total0, 1e-9)
        matmul = {k: max(v, _measure_matmul(env).get(k, 0.0)) for k, v in matmul.items()}  # the better of two

        if bf16_slow:  # real bf16 kernels, which this CPU can only emulate: batch 1 within a budget
            result, worker = results["bf16"], workers["bf16"]
            spent, times = 0.0, []
            while spent < bf16_budget_s and len(times) < 5:
                reply = worker.ask(op="time", batch=1, iters=1)
                times += [t * 1e3 for t in reply["times"]]
                spent += reply["times"][0]
            result.batch_ms[1] = times
            fp32 = results["default"].median_ms(1) if "default" in results else None
            slower = f", {statistics.median(times) / fp32:.0f}× the fp32 default" if fp32 else ""
            result.note = (f"this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}); real bf16 "
                           f"kernels timed at batch 1 only ({len(times)} calls{slower}); the Predictor refuses bf16 "
                           "here")
            result.label = "fastvit bf16 (not native here)"
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(workdir, ignore_errors=True)

    versions = {"fastvit": fastvit.__version__, "torch": torch.__version__}
    for package, python in (("onnxruntime", ort_python), ("timm", timm_python)):
        if (package == "timm" and have_timm) or (package == "onnxruntime" and have_ort):
            versions[package] = _package_version(python, package)
    for key in paths:  # a skipped or failed path keeps its place in the table
        results.setdefault(key, PathResult(key, PATHS[key].label))
    return BenchmarkResult(
        name=name, input_size=size, gflop_per_image=gflop, batch_sizes=tuple(batch_sizes), threads=threads,
        matmul=matmul, paths={k: results[k] for k in paths}, foreign_cpu=foreign,
        machine=f"{_cpu_name()}, {os.cpu_count()} logical CPUs, {torch.backends.cpu.get_cpu_capability()}",
        versions=versions, command=command or f"fastvit benchmark {name}", seconds=time.perf_counter() - started,
    )


def _package_version(python: str, package: str) -> str:
    if python == sys.executable:
        from importlib.metadata import version

        return version(package)
    probe = subprocess.run([python, "-c", f"from importlib.metadata import version; print(version('{package}'))"],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip() or "?"
