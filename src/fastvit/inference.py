"""Fast inference: exact inference-only folding, fused oneDNN kernels, bf16, compilation and ONNX Runtime.

:class:`Predictor` is the one entry point. ``Predictor(model)`` (or
``Predictor.from_pretrained("fastvit_t8.apple_in1k")``) is a callable that computes
``model(images)`` in eval mode, only faster:

1. **fold** (:func:`~fastvit.inference_folds.fold_for_inference`): timm's reparameterization,
   then the exact folds timm's key layout cannot hold (BatchNorms and layer scales into the
   convolutions beside them, channel-doubling grouped convs recast as depthwise ones).
2. **run** it through oneDNN (:mod:`fastvit.onednn`: pre-packed weights, the GELU or the residual
   add fused into each convolution; ``engine="onednn"``, the default on CPU), on channels-last
   tensors. A large batch runs stage by stage, each stage in chunks sized to its activations, and
   is split across the cores as parallel single-threaded streams.
3. **bf16** (``precision="bf16"``) where the CPU has native bf16. Elsewhere bf16 kernels fall back
   to reference code, so the predictor refuses it; ``allow_emulated_bf16=True`` instead runs bf16
   *numerics* (every result rounded to bf16) at fp32 speed, to study accuracy.
4. **compile** where it pays: oneDNN's graph compiler (a frozen TorchScript trace with the oneDNN
   fuser, ~0.5–2 s per input shape) removes the per-op dispatch cost that dominates batch 1. By
   default (``compile="auto"``) a shape is compiled once it has run ``AUTO_COMPILE_CALLS`` times,
   so a one-off call never waits for the compiler and a serving loop soon runs compiled;
   ``compile=True`` compiles every shape on first use, ``compile="inductor"`` uses
   ``torch.compile`` with frozen weights (tens of seconds), ``compile=False`` never compiles.
5. or **ONNX Runtime** (``backend="onnxruntime"``, ``pip install 'fastvit[onnx]'``): the folded
   graph exported once (cached on disk by weights digest) and run by an ``InferenceSession``.

Optional heavy modules (onnxruntime, onnx, torch._dynamo, torch._inductor) are imported only when
an option needs them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import FastViTError
from .inference_folds import fold_for_inference
from .onednn import OneDnnFusion, from_onednn, onednn_available, to_onednn

__all__ = [
    "AUTO_COMPILE_CALLS",
    "BACKENDS",
    "COMPILERS",
    "ENGINES",
    "PRECISIONS",
    "Predictor",
    "PrecisionNotSupportedError",
    "bf16_is_native",
]

PRECISIONS = ("fp32", "bf16")
BACKENDS = ("torch", "onnxruntime")
ENGINES = ("onednn", "eager")
COMPILERS = ("onednn-graph", "inductor")
AUTO_COMPILE_CALLS = 10
"""With ``compile="auto"``, the number of runs of one input shape after which it is compiled."""
MICRO_BATCH_BYTES = 8 << 20
"""A large batch runs stage by stage, each stage in chunks of as many images as keep its largest
activation under this budget: the early, high-resolution stages a few images at a time (their
activations stay in cache), the late ones many at a time (their small convolutions need the batch
to keep both cores busy)."""




class PrecisionNotSupportedError(FastViTError):
    """A precision this machine cannot run at speed (bf16 on a CPU without native bf16)."""


def bf16_is_native() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16, AVX-NE-CONVERT or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ----------------------------------------------------------------------------------------------
# Predictor
# ----------------------------------------------------------------------------------------------


class _Tail(nn.Module):
    """final_conv and head of a (folded) FastVit: logits, or pooled pre-logits for ``embed``."""

    def __init__(self, model: nn.Module, pre_logits: bool):
        super().__init__()
        self.final_conv, self.head, self.pre_logits = model.final_conv, model.head, pre_logits
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final_conv(x), pre_logits=self.pre_logits)


def _segments(model: nn.Module, output: str) -> list[nn.Module] | None:
    """The network cut at its stage boundaries (stem, each stage, tail), where the activation
    size per image changes most; None for a network without that layout (features_only)."""
    if not all(hasattr(model, name) for name in ("stem", "stages", "final_conv", "head")):
        return None
    return [model.stem, *model.stages, _Tail(model, pre_logits=output == "embed")]


def _segment_activation_bytes(model: nn.Module, input_size: Sequence[int]) -> list[int] | None:
    """Bytes of the largest activation of one image inside each segment at ``input_size`` (C, H, W).

    Measured on a forward pass at a quarter of the size in each dimension and scaled up (the
    meta device would say it exactly, but its first use imports torch's compiler stack: seconds).
    """
    segments = _segments(model, "forward")
    if segments is None:
        return None
    channels, height, width = input_size
    small = (channels, max(32, height // 4), max(32, width // 4))
    scale = (height * width) / (small[1] * small[2])
    largest = [0] * len(segments)
    current = 0

    def hook(_module, _inputs, output):
        if isinstance(output, Tensor) and output.ndim >= 2:
            largest[current] = max(largest[current], output[0].numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        parameter = next(model.parameters())
        x = torch.zeros(1, *small, device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            for current, segment in enumerate(segments):
                x = segment(x)
    except Exception:  # noqa: BLE001 - a sizing heuristic must never break prediction
        return None
    finally:
        for handle in handles:
            handle.remove()
    return [int(size * scale) for size in largest]


class Predictor:
    """A FastViT prepared for the fastest inference this machine offers, called like the model.

    Args:
        model: a :class:`~fastvit.FastVit` (or ``features_only`` model), fused or not; it is
            left untouched unless ``inplace``.
        precision: ``'fp32'`` or ``'bf16'``. bf16 needs a CPU with native bf16 (see
            :func:`bf16_is_native`); elsewhere it raises :class:`PrecisionNotSupportedError`
            unless ``allow_emulated_bf16=True``, because it would be many times slower than fp32.
        backend: ``'torch'`` or ``'onnxruntime'`` (needs ``pip install fastvit[onnx]``).
        engine: torch backend only. ``'onednn'`` (default on CPU): fused oneDNN convolutions with
            pre-packed weights; ``'eager'``: the folded network in plain PyTorch ops.
        compile: ``'auto'`` (default): compile an input shape with the oneDNN graph compiler
            once it has run ``AUTO_COMPILE_CALLS`` times (fp32 on the CPU with the torch backend;
            a shape that fails to compile keeps running uncompiled). ``True`` or
            ``'onednn-graph'``: compile every shape on first use (a frozen TorchScript trace,
            ~0.5–2 s per shape, which removes the per-op dispatch cost that dominates batch 1);
            ``'inductor'`` for ``torch.compile`` with frozen weights (tens of seconds, and slower
            here); ``False``: never. Compiled shapes are kept per (stage, batch, H, W).
        channels_last: memory format; None picks channels-last on CPU (faster for every engine
            here).
        threads: intra-op threads for torch (process-wide ``torch.set_num_threads``) and for
            ONNX Runtime; None keeps torch's default (one per physical core).
        micro_batch: None (default) runs a large batch stage by stage, each stage in chunks
            sized to its activations (see ``MICRO_BATCH_BYTES``); an int runs the whole network
            in chunks of that many images; 0 runs the batch as one.
        streams: split a batch of at least 4 images per stream into this many shares run in
            parallel, each with one intra-op thread; None: one stream per thread on CPU when
            stage-wise micro-batching is on, else 1.
        input_size: (C, H, W) the predictor is tuned for; default the model's pretrained size.
        allow_emulated_bf16: where bf16 is not native, run bf16 *numerics* instead of refusing:
            every op's result is rounded to bf16 (:class:`_Bf16Rounding`), at fp32 speed.
        cache_dir: where the ONNX Runtime backend keeps exported graphs (default
            ``$FASTVIT_CACHE`` or ``~/.cache/fastvit``).
        inplace: fold ``model`` itself instead of a copy: faster to set up and no second copy
            of the weights, but ``model`` is then an inference-only network (what a command-line
            tool wants).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "fp32",
        backend: str = "torch",
        engine: str | None = None,
        compile: bool | str = "auto",
        channels_last: bool | None = None,
        threads: int | None = None,
        micro_batch: int | None = None,
        streams: int | None = None,
        input_size: Sequence[int] | None = None,
        allow_emulated_bf16: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        inplace: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if compile is True:
            compile = "onednn-graph"
        if compile and compile != "auto" and compile not in COMPILERS:
            raise ValueError(
                f"unknown compile mode {compile!r}; expected 'auto', True, False or one of {', '.join(COMPILERS)}"
            )
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        on_cpu = self.device.type == "cpu"
        if compile == "auto" and not (on_cpu and precision == "fp32" and backend == "torch"):
            compile = False
        if engine is None:
            engine = "onednn" if on_cpu and onednn_available() and precision == "fp32" and backend == "torch" else "eager"
        self.emulate_bf16 = precision == "bf16" and on_cpu and not bf16_is_native()
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
        if engine == "onednn" and not (on_cpu and onednn_available()):
            raise ValueError("engine='onednn' needs a CPU model and a torch build with oneDNN")
        if engine == "onednn" and precision != "fp32":
            raise ValueError("engine='onednn' runs float32; use engine='eager' with precision='bf16'")
        if precision == "bf16":
            if backend != "torch":
                raise ValueError("precision='bf16' is available with backend='torch' only")
            if self.emulate_bf16 and not allow_emulated_bf16:
                raise PrecisionNotSupportedError(
                    f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 (AVX512-BF16, "
                    "AVX-NE-CONVERT or AMX): bf16 kernels fall back to reference code here, many times slower than fp32. "
                    "Use precision='fp32', or allow_emulated_bf16=True for bf16 numerics emulated at fp32 speed "
                    "(to study accuracy, not for speed)"
                )
            if self.emulate_bf16 and compile:
                raise ValueError("emulated bf16 cannot be compiled")
        if threads is not None:
            torch.set_num_threads(threads)

        self.precision, self.backend, self.engine, self.compile = precision, backend, engine, compile
        self.threads = threads
        self.channels_last = on_cpu if channels_last is None else channels_last
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.input_size = tuple(input_size or self.pretrained_cfg.get("input_size") or (3, 256, 256))
        self.num_classes = getattr(model, "num_classes", None)
        self.num_features = getattr(model, "num_features", None)

        self.model = fold_for_inference(model, inplace=inplace)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.micro_batch = micro_batch
        self.segment_batches: list[int] | None = None
        if micro_batch is None:  # per stage: as many images as keep its activations within budget
            sizes = _segment_activation_bytes(self.model, self.input_size)
            if sizes:
                self.segment_batches = [max(1, MICRO_BATCH_BYTES // max(size, 1)) for size in sizes]
        elif micro_batch > 0 and _segments(self.model, "forward") is not None:
            self.segment_batches = [micro_batch] * len(_segments(self.model, "forward"))
        if self.emulate_bf16:
            _round_to_bf16_(self.model)
        elif precision == "bf16":
            self.model = self.model.to(torch.bfloat16)
        if engine == "onednn" and backend == "torch":
            to_onednn(self.model)
        self._compiled: dict[tuple, Callable] = {}
        self._runs: dict[tuple, int] = {}  # runs per input shape, for compile="auto"
        self._compile_lock = threading.Lock()
        if streams is None:
            streams = torch.get_num_threads() if on_cpu and backend == "torch" and self.segment_batches else 1
        self.streams = max(1, streams)
        self._pool: ThreadPoolExecutor | None = None
        self._ort = None
        if backend == "onnxruntime":
            self._ort = _OrtRunner(self.model_for_export(), self.input_size, threads, cache_dir)

    # -- construction helpers ---------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Predictor:
        """``Predictor(create_model(name, pretrained=..., checkpoint_path=...), **options)``."""
        from .registry import create_model

        model = create_model(name, pretrained=pretrained and checkpoint_path is None, checkpoint_path=checkpoint_path,
                             **(model_kwargs or {}))
        return cls(model.eval(), **options)

    def model_for_export(self) -> nn.Module:
        """The folded float32 network in plain PyTorch ops (what ONNX and TorchScript export)."""
        plain = from_onednn(copy.deepcopy(self.model)).float()
        return plain.to(memory_format=torch.contiguous_format)  # NCHW traces give NCHW graphs

    @property
    def data_config(self) -> dict[str, Any]:
        from .data import resolve_data_config

        return resolve_data_config(pretrained_cfg=self.pretrained_cfg, args={"input_size": self.input_size})

    def transform(self):
        """The eval transform (PIL image -> float tensor) that belongs to the model's weights."""
        from .data import create_transform

        return create_transform(**self.data_config)

    # -- running ----------------------------------------------------------------------------

    def __call__(self, images: Tensor) -> Tensor:
        """The model's output for a (B, C, H, W) float batch: logits, or pooled features for a
        model without classifier (a list of maps for a ``features_only`` model)."""
        return self._run(images, "forward")

    def embed(self, images: Tensor) -> Tensor:
        """Pooled pre-logits features (B, num_features), as ``forward_head(..., pre_logits=True)``."""
        return self._run(images, "embed")

    def _run(self, images: Tensor, output: str):
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        if self._ort is not None:
            return self._ort(images, output)
        dtype = torch.bfloat16 if self.precision == "bf16" and not self.emulate_bf16 else torch.float32
        x = images.to(self.device, dtype)
        with self._fusion_enabled():  # process-wide state: set once here, not in each stream
            if self.streams > 1 and x.shape[0] >= MIN_IMAGES_PER_STREAM * self.streams:
                parts = x.tensor_split(self.streams)
                outs = list(self._stream_pool().map(lambda part: self._run_local(part, output), parts))
                out = [torch.cat(maps) for maps in zip(*outs)] if isinstance(outs[0], list) else torch.cat(outs)
            else:
                out = self._run_local(x, output)
        if isinstance(out, Tensor):
            return out.float() if out.dtype != torch.float32 else out
        return [o.float() for o in out]

    def _run_local(self, x: Tensor, output: str):
        """Run a batch (or a stream's share of one) on this thread: whole, in chunks, or stage by stage."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _Bf16Rounding(self.emulate_bf16):
            if self.emulate_bf16:
                x = x.to(torch.bfloat16).float()
            if self.segment_batches is None and self.micro_batch and x.shape[0] > self.micro_batch:
                whole = self.model if output == "forward" else _Embedder(self.model)  # features_only
                parts = [self._call(("whole", output), whole, chunk) for chunk in x.split(self.micro_batch)]
                return [torch.cat(maps) for maps in zip(*parts)] if isinstance(parts[0], list) else torch.cat(parts)
            if self.segment_batches is None or x.shape[0] <= min(self.segment_batches):
                whole = self.model if output == "forward" else _Embedder(self.model)
                return self._call(("whole", output), whole, x)
            out = x
            for index, (segment, step) in enumerate(zip(_segments(self.model, output), self.segment_batches)):
                key = (index, output)
                if out.shape[0] > step:
                    out = torch.cat([self._call(key, segment, chunk) for chunk in out.split(step)])
                else:
                    out = self._call(key, segment, out)
            return out

    def _stream_pool(self) -> ThreadPoolExecutor:
        """Worker threads that each run one share of a batch with one intra-op thread, so the
        cores work on different images instead of meeting at a barrier after every small op."""
        if self._pool is None:
            self._pool = _single_threaded_pool(self.streams)
        return self._pool

    def _call(self, key: tuple, module: nn.Module, x: Tensor):
        if not self.compile:
            return module(x)
        key = (*key, tuple(x.shape), x.dtype, x.is_contiguous())
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled(x)
        if self.compile == "auto":
            self._runs[key] = runs = self._runs.get(key, 0) + 1
            if runs < AUTO_COMPILE_CALLS:
                return module(x)
        with self._compile_lock:
            if key not in self._compiled:
                self._compiled[key] = self._compile_shape(module, x)
        return self._compiled[key](x)

    def _compile_shape(self, module: nn.Module, x: Tensor) -> Callable:
        if self.compile != "auto":
            return _compile(module, x, self.compile)
        try:
            return _compile(module, x, "onednn-graph")
        except Exception as error:  # an automatic optimisation must never break inference
            warnings.warn(f"compiling for input {tuple(x.shape)} failed, running it uncompiled: {error}")
            return module

    def _fusion_enabled(self):
        """The oneDNN graph fuser is process-wide TorchScript state: on only while we run."""
        if self.compile not in ("onednn-graph", "auto"):
            return contextlib.nullcontext()
        return OneDnnFusion()

    def __repr__(self) -> str:
        return (
            f"Predictor(backend={self.backend!r}, engine={self.engine!r}, precision={self.precision!r}, "
            f"compile={self.compile!r}, channels_last={self.channels_last}, micro_batch={self.micro_batch}, "
            f"threads={self.threads or torch.get_num_threads()})"
        )


MIN_IMAGES_PER_STREAM = 4
"""A batch is split across streams only when each gets at least this many images."""


def _single_threaded_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool whose threads run torch ops with one intra-op thread each.

    ``torch.set_num_threads`` sets the calling thread's OpenMP team size and a process-wide
    default; each worker sets its own to 1 (after torch's lazy per-thread initialisation, which
    would otherwise copy the default back), then the caller's default is restored.
    """
    restore = torch.get_num_threads()
    ready = threading.Barrier(workers + 1)

    def init() -> None:
        torch.get_num_threads()  # torch's per-thread initialisation, done now
        torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="fastvit-stream", initializer=init)
    for _ in range(workers):
        pool.submit(lambda: None)
    ready.wait()
    torch.set_num_threads(restore)
    return pool


@torch.no_grad()
def _round_to_bf16_(model: nn.Module) -> None:
    """Round every float32 parameter and buffer of ``model`` to the nearest bfloat16, in place."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.to(torch.bfloat16).float())


class _Bf16Rounding(TorchDispatchMode):
    """bf16 numerics at float32 speed: every float32 result of every op is rounded to bfloat16.

    With weights and input rounded too, this is what a bf16 network computes on native hardware,
    where each op reads bf16 operands, works in float32 and rounds its result to bf16; only the
    summation order inside an op can differ.
    """

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.enabled = enabled

    def __enter__(self):
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc):
        return super().__exit__(*exc) if self.enabled else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "is_view", False):  # a view of rounded values is rounded
            return out
        return _round_tree(out, inplace=func._schema.is_mutable)


def _round_tree(value, inplace: bool):
    if isinstance(value, Tensor):
        if value.dtype != torch.float32:
            return value
        return value.copy_(value.to(torch.bfloat16)) if inplace else value.to(torch.bfloat16).float()
    if isinstance(value, (list, tuple)):
        return type(value)(_round_tree(v, inplace) for v in value)
    return value


class _Embedder(nn.Module):
    """forward_features + pooled pre-logits of a (folded) FastVit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


# ----------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------


def _compile(module: nn.Module, example: Tensor, mode: str) -> Callable:
    """A compiled callable for inputs shaped like ``example``."""
    plain = from_onednn(copy.deepcopy(module))  # both compilers fuse oneDNN calls themselves
    if mode == "inductor":
        compiled = torch.compile(plain, dynamic=False, options={"freezing": True})
        compiled(example)
        return compiled
    # oneDNN graph: TorchScript's LLGA fuser partitions the frozen graph into oneDNN compiled
    # partitions (conv + GELU / add / BN fused), which run with far less per-op overhead.
    with warnings.catch_warnings(), OneDnnFusion():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, not gone
        traced = torch.jit.freeze(torch.jit.trace(plain, example, check_trace=False))
        for _ in range(2):  # profiling runs, after which the fused graph is in place
            traced(example)
    return traced


# ----------------------------------------------------------------------------------------------
# ONNX Runtime backend
# ----------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASTVIT_CACHE") or Path.home() / ".cache" / "fastvit")


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _OrtRunner:
    """onnxruntime sessions on the folded graph, one per image size (a static size lets ONNX Runtime
    plan memory and pick its blocked-layout kernels; a dynamic one costs it ~20 %), each exported
    once with a dynamic batch and cached on disk by weights digest."""

    def __init__(self, folded: nn.Module, input_size: Sequence[int], threads: int | None, cache_dir):
        from .export import import_onnxruntime

        self.ort = import_onnxruntime()
        self.folded = folded
        self.outputs = ("logits", "embedding") if hasattr(folded, "forward_head") else ("output",)
        self.cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.digest = _weights_digest(folded)
        self.threads = threads
        self.sessions: dict[tuple[int, ...], Any] = {}
        self.session_for(tuple(input_size))

    def session_for(self, size: tuple[int, ...]):
        if size not in self.sessions:
            from .export import export_onnx

            path = self.cache / "onnx" / f"{self.digest}-{'x'.join(map(str, size))}-{'_'.join(self.outputs)}.onnx"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
                os.close(fd)
                try:
                    export_onnx(self.folded, tmp, input_size=size, dynamic_batch=True, outputs=self.outputs, fold=False)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            options = self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            self.sessions[size] = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.path = path
        return self.sessions[size]

    def __call__(self, images: Tensor, output: str) -> Tensor:
        name = {"forward": self.outputs[0], "embed": self.outputs[-1]}[output]
        x = images.detach().float().cpu().contiguous().numpy()
        (result,) = self.session_for(tuple(x.shape[1:])).run([name], {"input": x})
        return torch.from_numpy(result)
