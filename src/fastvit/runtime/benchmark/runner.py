"""CPU inference benchmark: our paths against timm, ONNX Runtime and OpenVINO, on the same weights, in
one run.

``fastvit benchmark NAME`` (or ``benchmarks/inference.py NAME``) measures, for one model:

* **fastvit** paths: the plain fused model (``eager``), the folded model in channels-last
  (``channels_last``), the default :class:`~fastvit.Predictor` (``default``), the
  Predictor with ``compile=True`` (``compile``) and, on request, ``compile='inductor'``
  (``inductor``), bf16 (``bf16``), the ONNX Runtime backend (``ort_backend``) and the OpenVINO
  backend in fp32 and bf16 (``ov_backend``, ``ov_backend_bf16``);
* **timm**'s fused model (``reparameterize_model``), NCHW and channels-last, when timm can be
  imported here or by ``--timm-python``;
* **ONNX Runtime** (default session options, ``ort``) and **OpenVINO** (its default precision,
  bf16 on a CPU with native bf16, ``openvino``; and fp32, ``openvino_fp32``; compiled for each
  batch size, its fastest) on timm's fused export, or on our reparameterized-only export, which
  is the same graph, when timm cannot export it;
* the CPU's capabilities (AVX2, AVX-512, AVX512-BF16, AMX) and its own **fp32 and bf16 matmul
  rate** (``torch.mm`` on large square matrices), so every result also reads as a fraction of
  what the CPU does at best.

Each path runs in its own worker process, so thread pools, allocator state and peak memory do not
leak between paths. The workers take turns (round robin, with a pause between turns), so slow
phases of a shared machine hit every path alike; CPU time used by other processes during the
measurements is reported. Batch-1 latency is the median over many timed calls after warm-up;
batch-B throughput is B over the median time of a batch-B call. Peak memory is the worker's peak
resident set while running a batch, minus its resident set before the model was built.

The workers are :mod:`.worker` processes; this module orchestrates them, :mod:`.machine` describes
the machine and :mod:`.report` formats the results.
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
from dataclasses import dataclass
from pathlib import Path

from ...version import __version__
from .machine import cpu_capabilities, cpu_name, interpreter_has, machine_busy_seconds, package_version
from .report import REFERENCE_PATH, BenchmarkResult, PathResult
from .worker import PathSpec, export_fused_onnx

__all__ = ["DEFAULT_PATHS", "PATHS", "run_benchmark"]

WORKER_SCRIPT = Path(__file__).resolve().with_name("worker.py")
SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the fastvit package, for the workers

PATHS: dict[str, PathSpec] = {
    spec.key: spec
    for spec in (
        PathSpec("eager", "fastvit fused, eager NCHW (= timm's fused graph)", "fastvit", {"mode": "fused"}),
        PathSpec("channels_last", "fastvit folded, eager channels-last", "fastvit",
                 {"mode": "predictor", "engine": "eager", "micro_batch": 0, "compile": False}),
        PathSpec("default", "**fastvit Predictor, fp32 default**", "fastvit", {"mode": "predictor"}),
        PathSpec("compile", "fastvit Predictor, compile=True (oneDNN graph)", "fastvit",
                 {"mode": "predictor", "compile": True}),
        PathSpec("inductor", "fastvit Predictor, compile='inductor' (whole batch)", "fastvit",
                 {"mode": "predictor", "compile": "inductor", "micro_batch": 0}),
        PathSpec("bf16", "**fastvit Predictor, precision='bf16'**", "fastvit", {"mode": "bf16"}, "bf16"),
        PathSpec("ort_backend", "fastvit Predictor, backend='onnxruntime'", "fastvit",
                 {"mode": "predictor", "backend": "onnxruntime"}),
        PathSpec("ov_backend", "fastvit Predictor, backend='openvino'", "fastvit",
                 {"mode": "predictor", "backend": "openvino"}),
        PathSpec("ov_backend_bf16", "fastvit Predictor, backend='openvino', precision='bf16'", "fastvit",
                 {"mode": "predictor", "backend": "openvino", "precision": "bf16"}, "bf16"),
        PathSpec("timm", "timm fused, NCHW", "timm", {}),
        PathSpec("timm_cl", "timm fused, channels-last", "timm", {"channels_last": True}),
        PathSpec("ort", "ONNX Runtime on the fused export", "ort", {}),
        PathSpec("openvino", "OpenVINO on the fused export, its default precision", "openvino", {}, "default"),
        PathSpec("openvino_fp32", "OpenVINO on the fused export, fp32", "openvino", {"precision": "f32"}),
    )
}
DEFAULT_PATHS = ("eager", "channels_last", "default", "compile", "bf16", "ort_backend", "ov_backend",
                 "ov_backend_bf16", "timm", "timm_cl", "ort", "openvino", "openvino_fp32")
PEER_MODULES = {"timm": "timm", "ort": "onnxruntime", "openvino": "openvino"}
"""The package each peer runtime needs."""
BACKEND_MODULES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino",)}
"""The packages each of our backends needs in this interpreter."""


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


@dataclass
class _Run:
    """One benchmark run's shared state: where the files are and how to start workers."""

    workdir: Path
    env: dict
    common: dict  # what every worker's setup gets
    peer_python: dict[str, str]  # runtime -> the interpreter that runs it
    available: dict[str, bool]  # runtime or backend -> whether its packages are there

    def start(self, key: str, spec: PathSpec) -> tuple[_WorkerProcess, dict]:
        worker = _WorkerProcess(key, self.peer_python.get(spec.runtime, sys.executable), self.env)
        try:
            return worker, worker.ask(op="setup", spec=vars(spec), onnx=str(self.workdir / "fused.onnx"),
                                      **self.common)
        except RuntimeError:
            worker.close()
            raise


def _export_peer_graph(run: _Run, model, size, have_timm: bool) -> str:
    """Write the peers' graph (``fused.onnx``) and say what it is: timm's fused export when timm is
    here, else our reparameterized-only export of the same weights (the identical graph)."""
    import torch

    from fastvit.models import create_model, reparameterize

    onnx_path = run.workdir / "fused.onnx"
    if not have_timm:
        export_fused_onnx(reparameterize(model), size, onnx_path)
        return "fastvit's fused export (timm not available)"
    fused_weights = run.workdir / "timm-fused.safetensors"
    exporter = _WorkerProcess("peer-export", run.peer_python["timm"], run.env)
    try:
        reply = exporter.ask(op="setup", spec=vars(PATHS["timm"]), export_onnx=str(onnx_path),
                             save_fused=str(fused_weights), **run.common)
    finally:
        exporter.close()
    if reply["exported"]:
        return reply["exported"]
    from safetensors.torch import load_file  # timm could not export here: its fused weights, our graph

    with torch.device("meta"):
        fused = create_model(run.common["name"], num_classes=model.num_classes, inference_mode=True)
    fused.load_state_dict(load_file(str(fused_weights)), strict=True, assign=True)
    export_fused_onnx(fused.eval(), size, onnx_path)
    return "timm's fused weights (graph exported by fastvit: timm's env lacks onnx)"


def _unavailable(run: _Run, spec: PathSpec, bf16_native: bool) -> str:
    """Why a path cannot run here ('' when it can)."""
    needed = PEER_MODULES.get(spec.runtime) or spec.options.get("backend")
    if needed and not run.available.get(needed, True):
        python = run.peer_python.get(spec.runtime, sys.executable)
        extra = {"onnxruntime": "onnx", "openvino": "openvino"}.get(needed)
        install = f"pip install 'fastvit[{extra}]'; " if extra else ""
        return f"skipped: {needed} missing ({install}not importable by {python})"
    if spec.precision == "bf16" and spec.key != "bf16" and not bf16_native:
        return "skipped: this CPU has no native bf16"
    return ""


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
    the values). ``timm_python`` is an interpreter with timm (default: this one, if it has timm);
    ONNX Runtime and OpenVINO run there too when it has them, else here.
    """
    import torch
    from safetensors.torch import save_file

    from fastvit.models import create_model, reparameterize
    from fastvit.models.stats import count_ops
    from fastvit.runtime.precision import bf16_is_native

    started = time.perf_counter()
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}; known: {', '.join(PATHS)}")
    if REFERENCE_PATH not in paths:
        paths = (REFERENCE_PATH, *paths)
    model = create_model(name, pretrained=pretrained and checkpoint is None, checkpoint_path=checkpoint)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    if model.num_classes == 0:
        raise ValueError("benchmark a model with a classifier (num_classes > 0)")
    size = tuple(input_size or model.pretrained_cfg.get("input_size") or (3, 256, 256))
    macs, _ = count_ops(reparameterize(model), size)
    threads = threads or torch.get_num_threads()
    bf16_native = bf16_is_native()

    timm_python = timm_python or sys.executable
    peer_python = {runtime: timm_python if interpreter_has(timm_python, module) else sys.executable
                   for runtime, module in PEER_MODULES.items()}
    available = {runtime: interpreter_has(peer_python[runtime], module) for runtime, module in PEER_MODULES.items()}
    available |= {backend: all(interpreter_has(sys.executable, m) for m in modules)
                  for backend, modules in BACKEND_MODULES.items()}

    workdir = Path(tempfile.mkdtemp(prefix="fastvit-bench-"))
    weights = workdir / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    env = {"PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(
        p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    common = {"name": name, "num_classes": model.num_classes, "input_size": list(size), "weights": str(weights),
              "threads": threads, "workdir": str(workdir), "pretrained_cfg": model.pretrained_cfg}
    run = _Run(workdir, env, common, peer_python, available)
    results: dict[str, PathResult] = {}
    workers: dict[str, _WorkerProcess] = {}
    try:
        peers = [k for k in paths if PATHS[k].runtime in ("ort", "openvino") and available[PATHS[k].runtime]]
        peer_graph = _export_peer_graph(run, model, size, available["timm"]) if peers else ""
        for key in paths:
            spec = PATHS[key]
            result = results[key] = PathResult(key, spec.label, precision=spec.precision)
            result.error = _unavailable(run, spec, bf16_native)
            if result.error:
                continue
            if spec.runtime in ("ort", "openvino"):
                result.label = spec.label.replace("the fused export", peer_graph)
            log(f"setting up {key} ...")
            try:
                workers[key], reply = run.start(key, spec)
            except RuntimeError as error:
                result.error = str(error).splitlines()[0][:200]
                continue
            result.setup_s, result._base_rss = reply["build_s"], reply["base_rss_kib"]
            result.precision = reply.get("precision") or result.precision

        slow_bf16 = "bf16" in workers and not bf16_native
        matmul = _measure_matmul(env)
        _warm_and_check(workers, results, batch_sizes, workdir, slow_bf16)
        busy0, total0 = machine_busy_seconds()
        ours0 = sum(w.cpu_seconds() for w in workers.values())
        _round_robin(workers, results, batch_sizes, rounds, latency_iters, slow_bf16, log)
        busy1, total1 = machine_busy_seconds()
        ours1 = sum(w.cpu_seconds() for w in workers.values())
        foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(total1 - total0, 1e-9)
        matmul = {k: max(v, _measure_matmul(env).get(k, 0.0)) for k, v in matmul.items()}  # the better of two
        if slow_bf16:
            _time_emulated_bf16(workers["bf16"], results, bf16_budget_s)
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(workdir, ignore_errors=True)

    versions = {"fastvit": __version__, "torch": torch.__version__}
    for runtime, module in PEER_MODULES.items():
        if available[runtime] and any(PATHS[k].runtime == runtime or PATHS[k].options.get("backend") == module
                                      for k in paths):
            versions[module] = package_version(peer_python[runtime], module)
    return BenchmarkResult(
        name=name, input_size=size, gflop_per_image=2 * macs / 1e9, batch_sizes=tuple(batch_sizes), threads=threads,
        matmul=matmul, paths={k: results[k] for k in paths}, foreign_cpu=foreign,
        machine=f"{cpu_name()}, {os.cpu_count()} logical CPUs", capabilities=cpu_capabilities(),
        bf16_native=bf16_native, versions=versions, command=command or f"fastvit benchmark {name}",
        seconds=time.perf_counter() - started,
    )


def _warm_and_check(workers: dict, results: dict, batch_sizes, workdir: Path, slow_bf16: bool) -> None:
    """Warm every worker at every batch size (first-call time at the smallest), then save its
    outputs on the same two images and compare them with the reference path's."""
    import numpy as np

    from fastvit.runtime.predictor import AUTO_COMPILE_CALLS

    for key, worker in list(workers.items()):
        result = results[key]
        slow = key == "bf16" and slow_bf16
        try:
            for batch in batch_sizes:
                if slow and batch > 1:
                    continue
                # enough calls for the default predictor to reach its steady (auto-compiled) state
                warm = worker.ask(op="warm", batch=batch, seconds=1.0 if batch == 1 else 0.0,
                                  min_iters=1 if slow else AUTO_COMPILE_CALLS + 1)
                if batch == min(batch_sizes):
                    result.first_call_s = warm["first_call_s"]
            worker.ask(op="check", batch=2, out=str(workdir / f"check-{key}.npy"))  # the reference's two images
        except RuntimeError as error:
            result.error = str(error).splitlines()[0][:200]
            worker.close()
            del workers[key]
    reference = np.load(workdir / f"check-{REFERENCE_PATH}.npy")
    for key in workers:
        out = np.load(workdir / f"check-{key}.npy")
        results[key].max_abs_diff = float(np.abs(out - reference).max())
        results[key].top1_agree = float((out.argmax(-1) == reference.argmax(-1)).mean())


def _round_robin(workers: dict, results: dict, batch_sizes, rounds: int, latency_iters: int, slow_bf16: bool,
                 log) -> None:
    """The timed calls: for each batch size, the workers take turns, ``rounds`` times."""
    for batch in batch_sizes:
        iters = latency_iters if batch == 1 else 1
        for _ in range(rounds if batch == 1 else max(3, rounds // 2)):
            for key, worker in workers.items():
                if key == "bf16" and slow_bf16:
                    continue
                time.sleep(0.1)  # let spinning thread pools of the previous worker settle
                reply = worker.ask(op="time", batch=batch, iters=iters)
                results[key].batch_ms.setdefault(batch, []).extend(t * 1e3 for t in reply["times"])
                if reply.get("peak_rss_kib") is not None:
                    peak = (reply["peak_rss_kib"] - results[key]._base_rss) / 1024
                    results[key].peak_mib[batch] = max(results[key].peak_mib.get(batch, 0.0), peak)
        log(f"batch {batch} done")


def _time_emulated_bf16(worker: _WorkerProcess, results: dict, budget_s: float) -> None:
    """Real bf16 kernels, which this CPU can only emulate: batch 1, within a time budget."""
    import torch

    result = results["bf16"]
    spent, times = 0.0, []
    while spent < budget_s and len(times) < 5:
        reply = worker.ask(op="time", batch=1, iters=1)
        times += [t * 1e3 for t in reply["times"]]
        spent += reply["times"][0]
    result.batch_ms[1] = times
    fp32 = results["default"].median_ms(1) if "default" in results else None
    slower = f", {statistics.median(times) / fp32:.0f}× the fp32 default" if fp32 else ""
    result.note = (f"this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}); real bf16 "
                   f"kernels timed at batch 1 only ({len(times)} calls{slower}); the Predictor refuses bf16 here")
    result.label = "fastvit bf16 (not native here)"
