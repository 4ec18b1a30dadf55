"""One benchmark path in its own process: builds the model the way its runtime would (fastvit, timm,
ONNX Runtime or OpenVINO) and answers JSON commands on stdin (warm up, time, check outputs, matmul rate).

It imports only the standard library at the top and is started as a script, possibly in another
interpreter (the one that has timm), where fastvit may not be installed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: the package's own folder must not shadow anything

__all__ = ["PathSpec", "export_fused_onnx", "matmul_rate", "worker_main"]


@dataclass(frozen=True)
class PathSpec:
    key: str
    label: str
    runtime: str  # 'fastvit', 'timm', 'ort' or 'openvino'
    options: dict = field(default_factory=dict)
    precision: str = "fp32"  # 'fp32', 'bf16', or 'default' (the runtime's own choice, reported by the worker)


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
        return {"base_rss_kib": base, "build_s": built, "exported": getattr(self, "exported", None),
                "precision": getattr(self, "precision", None)}

    def _input(self, batch: int, seed: int = 0):
        import numpy as np

        if (batch, seed) not in self.inputs:
            rng = np.random.default_rng(seed + 1000 * batch)
            self.inputs[(batch, seed)] = rng.standard_normal((batch, *self.input_size)).astype(np.float32)
        array = self.inputs[(batch, seed)]
        if self.spec.runtime in ("ort", "openvino"):
            return array
        import torch

        return torch.from_numpy(array)

    # -- builders: each returns a callable batch -> logits (numpy or torch) ------------------

    def _build_fastvit(self):
        import torch

        from fastvit.models import reparameterize
        from fastvit.runtime.folds import fold_for_inference
        from fastvit.runtime.predictor import Predictor

        if self.setup.get("threads"):
            torch.set_num_threads(self.setup["threads"])
        model = self._load_fastvit()
        options = dict(self.spec.options)
        mode = options.pop("mode")
        if mode == "fused":
            fused = reparameterize(model)
            return _no_grad(fused)
        if mode == "bf16":
            from fastvit.runtime.precision import bf16_is_native

            if bf16_is_native():
                return Predictor(model, precision="bf16", input_size=self.input_size)
            # Not native: time the real bf16 kernels anyway (the Predictor would refuse).
            folded = fold_for_inference(model).to(memory_format=torch.channels_last).to(torch.bfloat16)

            def run(x):
                with torch.inference_mode():
                    return folded(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()

            return run
        return Predictor(model, input_size=self.input_size, cache_dir=self.setup["workdir"], **options)

    def _load_fastvit(self):
        import torch
        from safetensors.torch import load_file

        from fastvit.models import create_model

        with torch.device("meta"):
            model = create_model(self.setup["name"], num_classes=self.setup["num_classes"])
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
                export_fused_onnx(model, self.input_size, self.setup["export_onnx"])
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

    def _build_openvino(self):
        """OpenVINO's CPU plugin on the ONNX graph, as a user runs it (default settings, its default
        precision unless the path names one), compiled for each input shape it meets (static
        shapes: its fastest)."""
        import openvino as ov

        core = ov.Core()
        config = {}
        if self.spec.options.get("precision"):
            config["INFERENCE_PRECISION_HINT"] = self.spec.options["precision"]
        if self.setup.get("threads"):
            config["INFERENCE_NUM_THREADS"] = self.setup["threads"]
        graph = core.read_model(self.setup["onnx"])
        requests = {}

        def request_for(shape):
            if shape not in requests:
                static = graph.clone()
                static.reshape({static.inputs[0]: ov.PartialShape(list(shape))})
                requests[shape] = core.compile_model(static, "CPU", config).create_infer_request()
            return requests[shape]

        precision = request_for((1, *self.input_size)).get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        self.precision = "bf16" if "bf16" in str(precision) or "bfloat16" in str(precision) else "fp32"
        return lambda x: request_for(x.shape).infer({0: x})[0]

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


def export_fused_onnx(model, input_size, path) -> None:
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


if __name__ == "__main__":
    worker_main()
