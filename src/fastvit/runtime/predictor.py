"""Fast inference: exact inference-only folding, fused oneDNN kernels, bf16, compilation and ONNX Runtime.

:class:`Predictor` is the one entry point. ``Predictor(model)`` (or
``Predictor.from_pretrained("fastvit_t8.apple_in1k")``) is a callable that computes
``model(images)`` in eval mode, only faster:

1. **fold** (:func:`~fastvit.runtime.folds.fold_for_inference`): timm's reparameterization,
   then the exact folds timm's key layout cannot hold (BatchNorms and layer scales into the
   convolutions beside them, channel-doubling grouped convs recast as depthwise ones).
2. **run** it through oneDNN (:mod:`fastvit.runtime.onednn`: pre-packed weights, the GELU or the residual
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
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from .batching import (
    MICRO_BATCH_BYTES,
    MIN_IMAGES_PER_STREAM,
    Embedder,
    segment_activation_bytes,
    segments,
    single_threaded_pool,
)
from .folds import fold_for_inference
from .onednn import OneDnnFusion, from_onednn, onednn_available, to_onednn
from .precision import PRECISIONS, Bf16Rounding, PrecisionNotSupportedError, bf16_is_native, round_to_bf16_

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

BACKENDS = ("torch", "onnxruntime")
ENGINES = ("onednn", "eager")
COMPILERS = ("onednn-graph", "inductor")
AUTO_COMPILE_CALLS = 10
"""With ``compile="auto"``, the number of runs of one input shape after which it is compiled."""
MAX_COMPILED_SHAPES = 8
"""Input shapes (per output) a Predictor compiles at most; others run uncompiled. Each compiled
shape holds its own frozen graph and oneDNN primitives, so without a bound a caller that sends
many batch sizes (a dynamic batcher) grows memory and keeps stalling on the compiler."""


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
            every op's result is rounded to bf16 (:class:`Bf16Rounding`), at fp32 speed.
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
            sizes = segment_activation_bytes(self.model, self.input_size)
            if sizes:
                self.segment_batches = [max(1, MICRO_BATCH_BYTES // max(size, 1)) for size in sizes]
        elif micro_batch > 0 and segments(self.model, "forward") is not None:
            self.segment_batches = [micro_batch] * len(segments(self.model, "forward"))
        if self.emulate_bf16:
            round_to_bf16_(self.model)
        elif precision == "bf16":
            self.model = self.model.to(torch.bfloat16)
        if engine == "onednn" and backend == "torch":
            to_onednn(self.model)
        self._compiled: dict[tuple, Callable] = {}
        self._runs: dict[tuple, int] = {}  # runs per input shape, for compile="auto"
        self._compile_lock = threading.Lock()
        self._compiled_shapes: set[tuple] = set()  # (output, batch shape) of the calls that may compile
        self._shapes_frozen = False
        if streams is None:
            streams = torch.get_num_threads() if on_cpu and backend == "torch" and self.segment_batches else 1
        self.streams = max(1, streams)
        self._pool: ThreadPoolExecutor | None = None
        self._ort = None
        if backend == "onnxruntime":
            from .backends.onnxruntime import OrtRunner

            self._ort = OrtRunner(self.model_for_export(), self.input_size, threads, cache_dir)

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
        from ..models.registry import create_model

        model = create_model(name, pretrained=pretrained and checkpoint_path is None, checkpoint_path=checkpoint_path,
                             **(model_kwargs or {}))
        return cls(model.eval(), **options)

    def model_for_export(self) -> nn.Module:
        """The folded float32 network in plain PyTorch ops (what ONNX and TorchScript export)."""
        plain = from_onednn(copy.deepcopy(self.model)).float()
        return plain.to(memory_format=torch.contiguous_format)  # NCHW traces give NCHW graphs

    @property
    def data_config(self) -> dict[str, Any]:
        from ..data import resolve_data_config

        return resolve_data_config(pretrained_cfg=self.pretrained_cfg, args={"input_size": self.input_size})

    def transform(self):
        """The eval transform (PIL image -> float tensor) that belongs to the model's weights."""
        from ..data import create_transform

        return create_transform(**self.data_config)

    # -- running ----------------------------------------------------------------------------

    def __call__(self, images: Tensor) -> Tensor:
        """The model's output for a (B, C, H, W) float batch: logits, or pooled features for a
        model without classifier (a list of maps for a ``features_only`` model)."""
        return self._run(images, "forward")

    def embed(self, images: Tensor) -> Tensor:
        """Pooled pre-logits features (B, num_features), as ``forward_head(..., pre_logits=True)``."""
        return self._run(images, "embed")

    def prepare(self, batch_sizes: Sequence[int], outputs: Sequence[str] = ("forward",), freeze: bool = True) -> None:
        """Compile (when compiling is on) and warm every shape that calls with these batch sizes
        at ``input_size`` run, now rather than on a later call's path. With ``freeze``, no other
        shape is ever compiled afterwards: calls of other sizes run uncompiled, so a server that
        pads its batches to these sizes never waits for the compiler and its memory stays flat."""
        unknown = set(outputs) - {"forward", "embed"}
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; expected 'forward' and/or 'embed'")
        if len(set(batch_sizes)) * len(set(outputs)) > MAX_COMPILED_SHAPES and self.compile:
            raise ValueError(f"at most {MAX_COMPILED_SHAPES} shapes are compiled; prepare fewer batch sizes")
        for output in outputs:
            for batch in sorted(set(batch_sizes)):
                self._run(torch.zeros(batch, *self.input_size), output, compile_now=True)
        self._shapes_frozen = freeze

    @property
    def compiled_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(output, batch shape) of the calls whose pieces are compiled or may be compiled."""
        return sorted(self._compiled_shapes)

    def _run(self, images: Tensor, output: str, compile_now: bool = False):
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        if self._ort is not None:
            return self._ort(images, output)
        dtype = torch.bfloat16 if self.precision == "bf16" and not self.emulate_bf16 else torch.float32
        x = images.to(self.device, dtype)
        compiling = self._compiling((output, tuple(x.shape)), compile_now)
        with self._fusion_enabled():  # process-wide state: set once here, not in each stream
            if self.streams > 1 and x.shape[0] >= MIN_IMAGES_PER_STREAM * self.streams:
                parts = x.tensor_split(self.streams)
                outs = list(self._stream_pool().map(lambda part: self._run_local(part, output, compiling), parts))
                out = [torch.cat(maps) for maps in zip(*outs)] if isinstance(outs[0], list) else torch.cat(outs)
            else:
                out = self._run_local(x, output, compiling)
        if isinstance(out, Tensor):
            return out.float() if out.dtype != torch.float32 else out
        return [o.float() for o in out]

    def _compiling(self, shape: tuple, now: bool) -> tuple[tuple, bool] | None:
        """How the pieces of a call of this (output, batch shape) compile: None when compiling is
        off, else (shape, compile at once?) for :meth:`_call`."""
        if not self.compile:
            return None
        return shape, now or self.compile != "auto"

    def _admit(self, shape: tuple) -> bool:
        """Whether pieces of calls of ``shape`` may be compiled: a shape already admitted, or a new
        one while fewer than ``MAX_COMPILED_SHAPES`` are and the shapes are not frozen."""
        if shape in self._compiled_shapes:
            return True
        if self._shapes_frozen or len(self._compiled_shapes) >= MAX_COMPILED_SHAPES:
            return False
        self._compiled_shapes.add(shape)
        return True

    def _run_local(self, x: Tensor, output: str, compiling: tuple[tuple, bool] | None):
        """Run a batch (or a stream's share of one) on this thread: whole, in chunks, or stage by stage."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), Bf16Rounding(self.emulate_bf16):
            if self.emulate_bf16:
                x = x.to(torch.bfloat16).float()
            if self.segment_batches is None and self.micro_batch and x.shape[0] > self.micro_batch:
                whole = self.model if output == "forward" else Embedder(self.model)  # features_only
                parts = [self._call(("whole", output), whole, chunk, compiling) for chunk in x.split(self.micro_batch)]
                return [torch.cat(maps) for maps in zip(*parts)] if isinstance(parts[0], list) else torch.cat(parts)
            if self.segment_batches is None or x.shape[0] <= min(self.segment_batches):
                whole = self.model if output == "forward" else Embedder(self.model)
                return self._call(("whole", output), whole, x, compiling)
            out = x
            for index, (segment, step) in enumerate(zip(segments(self.model, output), self.segment_batches)):
                key = (index, output)
                if out.shape[0] > step:
                    out = torch.cat([self._call(key, segment, chunk, compiling) for chunk in out.split(step)])
                else:
                    out = self._call(key, segment, out, compiling)
            return out

    def _stream_pool(self) -> ThreadPoolExecutor:
        """Worker threads that each run one share of a batch with one intra-op thread, so the
        cores work on different images instead of meeting at a barrier after every small op."""
        if self._pool is None:
            self._pool = single_threaded_pool(self.streams)
        return self._pool

    def _call(self, key: tuple, module: nn.Module, x: Tensor, compiling: tuple[tuple, bool] | None):
        if compiling is None:
            return module(x)
        key = (*key, tuple(x.shape), x.dtype, x.is_contiguous())
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled(x)
        shape, now = compiling
        if not now:
            if len(self._runs) > 4 * MAX_COMPILED_SHAPES * 64:  # counts of shapes that never compiled
                self._runs.clear()
            self._runs[key] = runs = self._runs.get(key, 0) + 1
            if runs < AUTO_COMPILE_CALLS:
                return module(x)
        with self._compile_lock:
            if key not in self._compiled:
                if not self._admit(shape):
                    return module(x)
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


