"""CPU inference benchmark: our paths against timm and ONNX Runtime, on the same weights, in one run.

``fastvit benchmark NAME`` (or ``python -m fastvit.benchmark NAME``) measures, for one model:

* **fastvit** paths: the plain fused model (``eager``), the folded model in channels-last
  (``channels_last``), the default :class:`~fastvit.inference.Predictor` (``default``), the
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

This module imports only the standard library at the top: the worker side runs as a script in
another interpreter (for timm), where fastvit may not be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a worker script: the package's own folder must not shadow anything

__all__ = ["PATHS", "BenchmarkResult", "PathResult", "main", "matmul_rate", "run_benchmark"]


@dataclass(frozen=True)
class PathSpec:
    key: str
    label: str
    runtime: str  # 'fastvit', 'timm' or 'ort'
    options: dict = field(default_factory=dict)


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
REFERENCE_PATH = "eager"
PEER_PATH = "ort"


# ----------------------------------------------------------------------------------------------
# Measurements shared by both sides
# ----------------------------------------------------------------------------------------------


def matmul_rate(dtype_name: str = "float32", min_seconds: float = 0.05, max_n: int = 2048) -> dict:
    """GFLOP/s of ``torch.mm`` on square matrices: n doubles (from 256, up to ``max_n``) while a
    product takes under ``min_seconds``; then the best of a few timed products."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = 256
    while True:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        elapsed = _timed(lambda: torch.mm(a, b))
        if n >= max_n or elapsed >= min_seconds:
            break
        n *= 2
    reps = max(3, min(10, int(1.0 / max(elapsed, 1e-6))))
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return {"dtype": dtype_name, "n": n, "gflops": 2 * n**3 / best / 1e9, "threads": torch.get_num_threads()}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rss_kib(field_name: str = "VmRSS") -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux ≥ 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Worker side: runs one path, answers JSON commands on stdin
# ----------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, setup: dict):
        self.setup = setup
        self.spec = PathSpec(**setup["spec"])
        self.input_size = tuple(setup["input_size"])
        self.inputs: dict[int, Any] = {}

    def build(self) -> dict:
        base = _rss_kib()
        start = time.perf_counter()
        self.fn = getattr(self, f"_build_{self.spec.runtime}")()
        built = time.perf_counter() - start
        return {"base_rss_kib": base, "build_s": built, "exported": getattr(self, "exported", None)}

    def _input(self, batch: int, seed: int = 0):
        import numpy as np

        if (batch, seed) not in self.inputs:
            rng = np.random.default_rng(seed + 1000 * batch)
            self.inputs[(batch, seed)] = rng.standard_normal((batch, *self.input_size)).astype(np.float32)
        array = self.inputs[(batch, seed)]
        if self.spec.runtime == "ort":
            return array
        import torch

        return torch.from_numpy(array)

    # -- builders: each returns a callable batch -> logits (numpy or torch) ------------------

    def _build_fastvit(self):
        import torch

        import fastvit
        from fastvit.inference import Predictor
        from fastvit.inference_folds import fold_for_inference

        if self.setup.get("threads"):
            torch.set_num_threads(self.setup["threads"])
        model = self._load_fastvit(fastvit)
        options = dict(self.spec.options)
        mode = options.pop("mode")
        if mode == "fused":
            fused = fastvit.reparameterize(model)
            return _no_grad(fused)
        if mode == "bf16":
            from fastvit.inference import bf16_is_native

            if bf16_is_native():
                return Predictor(model, precision="bf16", input_size=self.input_size)
            # Not native: time the real bf16 kernels anyway (the Predictor would refuse).
            folded = fold_for_inference(model).to(memory_format=torch.channels_last).to(torch.bfloat16)

            def run(x):
                with torch.inference_mode():
                    return folded(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()

            return run
        return Predictor(model, input_size=self.input_size, cache_dir=self.setup["workdir"], **options)

    def _load_fastvit(self, fastvit):
        import torch
        from safetensors.torch import load_file

        with torch.device("meta"):
            model = fastvit.create_model(self.setup["name"], num_classes=self.setup["num_classes"])
        model.load_state_dict(load_file(self.setup["weights"]), strict=True, assign=True)
        model.pretrained_cfg = dict(self.setup.get("pretrained_cfg") or model.pretrained_cfg)
        return model.eval()

    def _build_timm(self):
        import timm
        import torch
        from safetensors.torch import load_file
        from timm.models import reparameterize_model

        if self.setup.get("threads"):
            torch.set_num_threads(self.setup["threads"])
        model = timm.create_model(self.setup["name"].split(".")[0], pretrained=False,
                                  num_classes=self.setup["num_classes"])
        model.load_state_dict(load_file(self.setup["weights"]), strict=True)
        model = reparameterize_model(model.eval())
        if self.setup.get("export_onnx"):
            try:
                _export_fused_onnx(model, self.input_size, self.setup["export_onnx"])
                self.exported = "timm's fused export"
            except Exception:  # noqa: BLE001 - e.g. the onnx package missing in the timm environment
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, self.setup["save_fused"])
                self.exported = ""
        channels_last = self.spec.options.get("channels_last", False)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def run(x):
            with torch.inference_mode():
                return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

        return run

    def _build_ort(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.setup.get("threads"):
            options.intra_op_num_threads = self.setup["threads"]
        session = ort.InferenceSession(self.setup["onnx"], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]

    # -- commands ------------------------------------------------------------------------------

    def warm(self, batch: int, seconds: float, min_iters: int) -> dict:
        first = _timed(lambda: self.fn(self._input(batch)))
        iters, start = 1, time.perf_counter()
        while iters < min_iters or time.perf_counter() - start < seconds:
            self.fn(self._input(batch))
            iters += 1
        return {"first_call_s": first, "warm_iters": iters}

    def time(self, batch: int, iters: int) -> dict:
        x = self._input(batch)
        reset = _reset_peak_rss()
        times = [_timed(lambda: self.fn(x)) for _ in range(iters)]
        return {"times": times, "peak_rss_kib": _rss_kib("VmHWM") if reset else None}

    def check(self, batch: int, out: str) -> dict:
        import numpy as np

        result = self.fn(self._input(batch, seed=7))
        array = result if isinstance(result, np.ndarray) else result.detach().float().cpu().numpy()
        np.save(out, array)
        return {"saved": out}


def _export_fused_onnx(model, input_size, path) -> None:
    """The fused graph as ONNX, the way a user exports timm's fused model: opset 17, dynamic batch."""
    import torch

    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, *input_size),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _no_grad(module):
    import torch

    def run(x):
        with torch.inference_mode():
            return module(x)

    return run


def worker_main() -> None:
    """Serve JSON commands on stdin; answer each with one JSON line on stdout."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    worker = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            op = command.pop("op")
            if op == "setup":
                worker = _Worker(command)
                reply = worker.build()
            elif op == "matmul":
                reply = {"rates": [matmul_rate(d) for d in command["dtypes"]]}
            elif op == "exit":
                break
            else:
                reply = getattr(worker, op)(**command)
            reply["ok"] = True
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which decides
            import traceback

            reply = {"ok": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


# ----------------------------------------------------------------------------------------------
# Orchestrator side
# ----------------------------------------------------------------------------------------------


class _WorkerProcess:
    def __init__(self, key: str, python: str, env: dict | None = None):
        self.key = key
        self.proc = subprocess.Popen(
            [python, "-u", str(Path(__file__).resolve()), "--worker"],
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


@dataclass
class PathResult:
    key: str
    label: str
    latency_ms: list[float] = field(default_factory=list)  # batch-1 call times
    batch_ms: dict[int, list[float]] = field(default_factory=dict)  # batch -> call times (ms)
    peak_mib: dict[int, float] = field(default_factory=dict)
    setup_s: float = float("nan")
    first_call_s: float = float("nan")
    max_abs_diff: float | None = None
    top1_agree: float | None = None
    note: str = ""
    error: str = ""

    def median_ms(self, batch: int) -> float | None:
        times = self.batch_ms.get(batch)
        return statistics.median(times) if times else None

    def throughput(self, batch: int) -> float | None:
        median = self.median_ms(batch)
        return batch / median * 1e3 if median else None


@dataclass
class BenchmarkResult:
    name: str
    input_size: tuple[int, int, int]
    gflop_per_image: float
    batch_sizes: tuple[int, ...]
    threads: int
    matmul: dict[str, float]
    paths: dict[str, PathResult]
    foreign_cpu: float
    machine: str
    versions: dict[str, str]
    command: str
    seconds: float

    def markdown(self) -> str:
        big = max(self.batch_sizes)
        peer = self.paths.get(PEER_PATH)
        peer_b1 = peer.median_ms(1) if peer and not peer.error else None
        peer_big = peer.throughput(big) if peer and not peer.error else None
        fp32_peak = self.matmul.get("float32")
        lines = [
            f"{self.name} at {self.input_size[1]}×{self.input_size[2]}, {self.gflop_per_image:.2f} GFLOP/image; "
            f"{self.machine}; {self.threads} threads; matmul (torch.mm, best of two measurements in this run) "
            f"fp32 {fp32_peak:.1f} GFLOP/s, bf16 {self.matmul.get('bfloat16', float('nan')):.2f} GFLOP/s.",
            "",
            f"| path | batch 1: median ms | × ORT | batch {big}: img/s | × ORT | GFLOP/s (% of fp32 mm) "
            f"| peak MiB (b{big}) | first call s | max abs Δ vs fp32 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for result in self.paths.values():
            if result.error:
                lines.append(f"| {result.label} | – | – | – | – | – | – | – | {result.error[:80]} |")
                continue
            b1 = result.median_ms(1)
            thr = result.throughput(big)
            rate = thr * self.gflop_per_image if thr else (1e3 / b1 * self.gflop_per_image if b1 else None)
            cells = [
                result.label,
                f"{b1:.1f}" if b1 else "–",
                f"{b1 / peer_b1:.2f}" if b1 and peer_b1 else "–",
                f"{thr:.1f}" if thr else "–",
                f"{thr / peer_big:.2f}" if thr and peer_big else "–",
                f"{rate:.1f} ({100 * rate / fp32_peak:.0f} %)" if rate and fp32_peak else "–",
                f"{result.peak_mib[big]:.0f}" if result.peak_mib.get(big) is not None else "–",
                f"{result.first_call_s:.2f}",
                "ref." if result.key == REFERENCE_PATH else (f"{result.max_abs_diff:.1e}"
                                                             if result.max_abs_diff is not None else "–"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [f"- {r.label.strip('*')}: {r.note}" for r in self.paths.values() if r.note]
        lines += [
            "",
            f"× ORT: time ratio at batch 1 (lower is better), throughput ratio at batch {big} (higher is better), "
            f"against {self.paths[PEER_PATH].label if PEER_PATH in self.paths else 'ONNX Runtime'}. "
            f"GFLOP/s is at batch {big}. Other processes used {100 * self.foreign_cpu:.0f} % of the machine's CPU "
            f"time during the measurements.",
            *notes,
            "",
            f"Versions: {', '.join(f'{k} {v}' for k, v in self.versions.items())}. Run: `{self.command}` "
            f"({self.seconds:.0f} s).",
        ]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "name": self.name, "input_size": self.input_size, "gflop_per_image": self.gflop_per_image,
            "batch_sizes": self.batch_sizes, "threads": self.threads, "matmul_gflops": self.matmul,
            "foreign_cpu": self.foreign_cpu, "machine": self.machine, "versions": self.versions,
            "paths": {k: vars(v) for k, v in self.paths.items()},
        }


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
    from fastvit.inference import AUTO_COMPILE_CALLS, bf16_is_native
    from fastvit.stats import count_ops

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
                    _export_fused_onnx(fused.eval(), size, onnx_path)
                    ort_source = "timm's fused weights (graph exported by fastvit: timm's env lacks onnx)"
            else:
                _export_fused_onnx(fastvit.reparameterize(model), size, onnx_path)
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


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``fastvit benchmark`` arguments (on ``parser`` if given, e.g. a CLI subcommand)."""
    parser = parser or argparse.ArgumentParser(prog="fastvit benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="fastvit_t8", help="model name (default fastvit_t8)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="use the pretrained weights (default: random)")
    weights.add_argument("--checkpoint", metavar="PATH", help="local weights file")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(DEFAULT_PATHS), metavar="PATH",
                        help=f"what to measure, of: {', '.join(PATHS)} (default: {' '.join(DEFAULT_PATHS)})")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32], metavar="B")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's, one per core)")
    parser.add_argument("--rounds", type=int, default=8, help="round-robin rounds (default 8)")
    parser.add_argument("--timm-python", metavar="PYTHON",
                        help="an interpreter that has timm (and onnxruntime) for the peer paths")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument("--out", metavar="FILE.md", help="also write the markdown table to a file")
    return parser


def run_from_args(args: argparse.Namespace, state_dict: dict | None = None, command: str = "") -> BenchmarkResult:
    result = run_benchmark(
        args.model, state_dict=state_dict, pretrained=args.pretrained, checkpoint=args.checkpoint,
        paths=tuple(args.paths), batch_sizes=tuple(sorted(set(args.batch_sizes))),
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker_main()
        return 0
    args = build_parser().parse_args(argv)
    run_from_args(args, command="fastvit benchmark " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
