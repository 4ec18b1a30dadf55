"""Fast inference: exact inference-only folding, fused oneDNN kernels in fp32 or bf16, compilation,
ONNX Runtime and OpenVINO.

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
3. **bf16** (``precision="bf16"``) where the CPU has native bf16 (AVX512-BF16, AMX): the same
   engine with bf16 weights and activations (oneDNN accumulates in fp32). Elsewhere bf16 kernels
   fall back to reference code, so the predictor refuses it; ``allow_emulated_bf16=True`` instead
   runs bf16 *numerics* (every result rounded to bf16) at fp32 speed, to study accuracy.
4. **compile** where it pays (:mod:`fastvit.runtime.compiling`): oneDNN's graph compiler (a frozen
   TorchScript trace with the oneDNN fuser, ~0.5–2 s per input shape) removes the per-op dispatch
   cost that dominates batch 1. By default (``compile="auto"``) a shape is compiled once it has run
   ``AUTO_COMPILE_CALLS`` times, so a one-off call never waits for the compiler and a serving loop
   soon runs compiled (a caller that knows how many calls are coming says so with
   :meth:`Predictor.expect`, and the shape is compiled up front or never); ``compile=True``
   compiles every shape on first use, ``compile="inductor"``
   uses ``torch.compile`` with frozen weights (tens of seconds), ``compile=False`` never compiles.
5. or another runtime on the folded graph (:mod:`fastvit.runtime.backends`):
   ``backend="onnxruntime"`` (``pip install 'fastvit[onnx]'``) or ``backend="openvino"``
   (``pip install 'fastvit[openvino]'``, fp32 or bf16), the graph converted once and cached on disk
   by a digest of its weights and layers.

Optional heavy modules (onnxruntime, onnx, openvino, torch._dynamo, torch._inductor) are imported
only when an option needs them.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from .batching import (
    BACKEND_CHUNK_IMAGES,
    MICRO_BATCH_BYTES,
    MIN_IMAGES_PER_STREAM,
    Embedder,
    concat_batches,
    even_chunks,
    segment_activation_bytes,
    segments,
    single_threaded_pool,
)
from .compiling import (
    AUTO_COMPILE_CALLS,
    COMPILE_PAYBACK_CALLS,
    COMPILERS,
    MAX_COMPILED_SHAPES,
    CompiledShapes,
    PieceCompiler,
)
from .folds import fold_for_inference
from .memory import keep_freed_memory
from .onednn import from_onednn, to_onednn
from .options import BACKENDS, ENGINES, check_batch, check_counts, check_options, check_whole, input_size_of
from .precision import PRECISIONS, Bf16Rounding, PrecisionNotSupportedError, bf16_is_native, round_to_bf16_

__all__ = [
    "AUTO_COMPILE_CALLS",
    "BACKENDS",
    "COMPILERS",
    "COMPILE_PAYBACK_CALLS",
    "ENGINES",
    "MAX_COMPILED_SHAPES",
    "PRECISIONS",
    "PrecisionNotSupportedError",
    "Predictor",
    "bf16_is_native",
]


class Predictor:
    """A FastViT prepared for the fastest inference this machine offers, called like the model.

    Args:
        model: a :class:`~fastvit.FastVit` (or ``features_only`` model), fused or not; it is
            left untouched unless ``inplace``.
        precision: ``'fp32'`` or ``'bf16'``. bf16 needs a CPU with native bf16 (see
            :func:`bf16_is_native`); elsewhere it raises :class:`PrecisionNotSupportedError`
            unless ``allow_emulated_bf16=True``, because it would be many times slower than fp32.
        backend: ``'torch'``, ``'onnxruntime'`` (fp32; ``pip install fastvit[onnx]``) or
            ``'openvino'`` (fp32 or bf16; ``pip install fastvit[openvino]``).
        engine: torch backend only. ``'onednn'`` (default on CPU): fused oneDNN convolutions with
            pre-packed weights; ``'eager'``: the folded network in plain PyTorch ops.
        compile: torch backend only. ``'auto'`` (default): compile an input shape with the oneDNN
            graph compiler once it has run ``AUTO_COMPILE_CALLS`` times (on the CPU; a shape that
            fails to compile keeps running uncompiled). ``True`` or ``'onednn-graph'``: compile
            every shape on first use (a frozen TorchScript trace, ~0.5–2 s per shape, which
            removes the per-op dispatch cost that dominates batch 1); ``'inductor'`` for
            ``torch.compile`` with frozen weights (tens of seconds, and slower here); ``False``:
            never. At most ``MAX_COMPILED_SHAPES`` (output, batch shape) pairs are compiled (see
            :meth:`prepare`); the OpenVINO backend compiles a static graph for those same shapes.
        channels_last: memory format; None picks channels-last on CPU (faster for every engine
            here).
        threads: intra-op threads for torch (process-wide ``torch.set_num_threads``) and for
            ONNX Runtime and OpenVINO; None keeps torch's default (one per physical core).
        micro_batch: None (default) runs a large batch stage by stage, each stage in chunks
            sized to its activations (see ``MICRO_BATCH_BYTES``); the ONNX Runtime and OpenVINO
            backends get a batch of more than twice ``BACKEND_CHUNK_IMAGES`` in chunks of that
            many. An int runs the whole network in chunks of that many images; 0 runs the batch
            as one.
        streams: split a batch of at least 4 images per stream into this many shares run in
            parallel, each with one intra-op thread; None: one stream per thread on CPU when
            stage-wise micro-batching is on, else 1.
        input_size: (C, H, W) the predictor is tuned for; default the model's pretrained size.
        allow_emulated_bf16: where bf16 is not native, run bf16 *numerics* instead of refusing:
            every op's result is rounded to bf16 (:class:`Bf16Rounding`), at fp32 speed (torch
            backend, eager engine).
        cache_dir: where the ONNX Runtime and OpenVINO backends keep converted graphs (default
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
        if not isinstance(model, nn.Module):
            raise TypeError(f"Predictor takes a model (a torch.nn.Module; fastvit.create_model makes one), "
                            f"got {type(model).__name__}")
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        on_cpu = self.device.type == "cpu"
        self.emulate_bf16 = precision == "bf16" and on_cpu and not bf16_is_native()
        compile, engine = check_options(precision, backend, engine, compile, on_cpu, self.emulate_bf16,
                                        allow_emulated_bf16)
        check_counts(micro_batch, streams, threads)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.input_size = input_size_of(model, input_size, self.pretrained_cfg)
        if threads is not None:
            torch.set_num_threads(threads)
        if on_cpu:
            keep_freed_memory()

        self.precision, self.backend, self.engine, self.compile = precision, backend, engine, compile
        self.threads = threads
        self.channels_last = on_cpu if channels_last is None else channels_last
        self.num_classes = getattr(model, "num_classes", None)
        self.num_features = getattr(model, "num_features", None)
        self.dtype = torch.bfloat16 if precision == "bf16" and not self.emulate_bf16 else torch.float32

        self.model = fold_for_inference(model, inplace=inplace)
        if self.channels_last and engine == "eager":  # the oneDNN engine packs its weights its own way
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.emulate_bf16:
            round_to_bf16_(self.model)
        if backend == "torch":  # other runtimes take float32 weights and convert them themselves
            self.model = self.model.to(self.dtype)
        if engine == "onednn":
            to_onednn(self.model)
        self.micro_batch = micro_batch
        parts = segments(self.model, "forward")
        self._segment_batches = [micro_batch] * len(parts or [None]) if micro_batch else None
        self._measured = micro_batch is not None  # else measured at the first batch that needs it
        staged = micro_batch != 0 and parts is not None
        if streams is None:
            streams = torch.get_num_threads() if on_cpu and backend == "torch" and staged else 1
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None
        self._shapes = CompiledShapes(MAX_COMPILED_SHAPES)
        self.compiler = PieceCompiler(compile, self._shapes) if compile else None
        self._runner = self._backend_runner(cache_dir) if backend != "torch" else None

    def _backend_runner(self, cache_dir):
        """The runtime that runs the folded graph for ``backend``: a callable (chunk, output, call) ->
        Tensor, ``call`` being the whole call's (output, batch shape)."""
        if self.backend == "onnxruntime":
            from .backends.onnxruntime import OrtRunner

            return OrtRunner(self.model_for_export(), self.input_size, self.threads, cache_dir)
        from .backends.openvino import OpenVinoRunner

        return OpenVinoRunner(self.model_for_export(), self.input_size, self.precision, self.threads, cache_dir,
                              self._shapes)

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
        """The folded float32 network in plain PyTorch ops (what ONNX, OpenVINO and TorchScript export)."""
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

    @property
    def segment_batches(self) -> list[int] | None:
        """Images per chunk in each segment (the stem with the first stage, each later stage, the
        tail) when a batch runs stage by stage; None when it never does. Measured once, at the
        first batch that needs it (a one-image call never pays for it)."""
        if not self._measured:
            self._measured = True
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            image = torch.zeros(1, *self.input_size, device=self.device, dtype=self.dtype)
            sizes = segment_activation_bytes(self.model, image.contiguous(memory_format=memory_format))
            if sizes:
                self._segment_batches = [max(1, MICRO_BATCH_BYTES // max(size, 1)) for size in sizes]
        return self._segment_batches

    # -- running ----------------------------------------------------------------------------

    def __call__(self, images: Tensor) -> Tensor:
        """The model's output for a (B, C, H, W) float batch: logits, or pooled features for a
        model without classifier (a list of maps for a ``features_only`` model)."""
        return self._run(images, "forward")

    def embed(self, images: Tensor) -> Tensor:
        """Pooled pre-logits features (B, num_features), as ``forward_head(..., pre_logits=True)``."""
        if not hasattr(self.model, "forward_head"):
            raise ValueError("a features_only model has no pooled embedding; calling the predictor gives its maps")
        return self._run(images, "embed")

    def prepare(self, batch_sizes: Sequence[int], outputs: Sequence[str] = ("forward",), freeze: bool = True) -> None:
        """Compile (when compiling is on) and warm every shape that calls with these batch sizes
        at ``input_size`` run, now rather than on a later call's path. With ``freeze``, no other
        shape is ever compiled afterwards: calls of other sizes run uncompiled, so a server that
        pads its batches to these sizes never waits for the compiler and its memory stays flat."""
        for batch in batch_sizes:
            check_whole("a batch size", batch, 1)
        unknown = set(outputs) - {"forward", "embed"}
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; expected 'forward' and/or 'embed'")
        compiles = self.compiler is not None or self.backend == "openvino"
        if len(set(batch_sizes)) * len(set(outputs)) > MAX_COMPILED_SHAPES and compiles:
            raise ValueError(f"at most {MAX_COMPILED_SHAPES} shapes are compiled; prepare fewer batch sizes")
        for output in outputs:
            for batch in sorted(set(batch_sizes)):
                self._run(torch.zeros(batch, *self.input_size), output, compile_now=True)
        if freeze:
            self._shapes.freeze()

    def expect(self, batch_size: int, calls: int, output: str = "forward") -> None:
        """Say that about ``calls`` calls of ``batch_size`` images at ``input_size`` are coming (a
        batch job knows). With ``compile="auto"``, that shape is compiled now if so many calls repay
        it (``COMPILE_PAYBACK_CALLS``), else never, and no other shape compiles afterwards: a short
        job neither stalls on the compiler halfway through nor pays for compiling what it will hardly
        use, and every call's result depends on its shape alone, not on the calls before it (compiled
        and uncompiled pieces differ in the last bits), so a resumed job computes what an
        uninterrupted one does. The OpenVINO backend's static compilations follow the same rule."""
        check_whole("batch_size", batch_size, 1)
        check_whole("calls", calls, 0)
        if self.backend != "openvino" and (self.compiler is None or self.compile != "auto"):
            return
        if calls >= COMPILE_PAYBACK_CALLS:
            self.prepare([batch_size], outputs=(output,))
        self._shapes.freeze()

    @property
    def compiled_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(output, batch shape) of the calls whose pieces are compiled or may be compiled."""
        return sorted(self._shapes.admitted)

    def _run(self, images: Tensor, output: str, compile_now: bool = False):
        check_batch(images, self.input_size[0])
        shape = (output, tuple(images.shape))
        if self._runner is not None:
            if not images.shape[0]:  # OpenVINO kills the process on an empty batch (SIGFPE): shapes from one image
                out = self._run(images.new_zeros(1, *images.shape[1:]), output)
                return [maps[:0] for maps in out] if isinstance(out, list) else out[:0]
            most = self.micro_batch
            if most is None:
                most = BACKEND_CHUNK_IMAGES if images.shape[0] > 2 * BACKEND_CHUNK_IMAGES else 0
            chunks = even_chunks(images, most) if most else (images,)
            return concat_batches([self._runner(chunk, output, shape) for chunk in chunks])
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format

        def run(part: Tensor, steps: list[int] | None):
            # layout, then dtype: in one copy torch takes a slow strided cast (bf16 batch 1: 124 against 75 µs)
            x = part.to(self.device, memory_format=memory_format).to(self.dtype)
            return self._run_local(x, output, shape, compile_now, steps)

        # the fuser is process-wide state: switched on once here, not in each stream
        with self.compiler.fusion() if self.compiler else contextlib.nullcontext():
            if self.streams > 1 and images.shape[0] >= MIN_IMAGES_PER_STREAM * self.streams:
                steps = self.segment_batches  # measured here, before the streams share the modules
                # each stream converts its own share: a batch's layout change is a copy of all its pixels
                outs = list(self._stream_pool().map(lambda part: run(part, steps), images.tensor_split(self.streams)))
                out = concat_batches(outs)
            else:
                out = run(images, self.segment_batches if images.shape[0] > 1 else None)
        if isinstance(out, Tensor):
            return out.float()
        return [o.float() for o in out]

    def _run_local(self, x: Tensor, output: str, shape: tuple, compile_now: bool, steps: list[int] | None):
        """Run a batch (or a stream's share of one) on this thread: whole, in chunks, or stage by
        stage in :func:`even_chunks` of at most ``steps`` images in each stage."""
        with torch.inference_mode(), Bf16Rounding(self.emulate_bf16):
            if self.emulate_bf16:
                x = x.to(torch.bfloat16).float()
            whole = self.model if output == "forward" else Embedder(self.model)
            if steps is None or x.shape[0] <= min(steps):
                return self._call(("whole", output), whole, x, shape, compile_now)
            if segments(self.model, output) is None:  # features_only: the whole network, in chunks
                chunks = even_chunks(x, steps[0])
                parts = [self._call(("whole", output), whole, chunk, shape, compile_now) for chunk in chunks]
                return concat_batches(parts)
            out = x
            for index, (segment, step) in enumerate(zip(segments(self.model, output), steps)):
                key = (index, output)
                if out.shape[0] > step:
                    chunks = even_chunks(out, step)
                    out = torch.cat([self._call(key, segment, chunk, shape, compile_now) for chunk in chunks])
                else:
                    out = self._call(key, segment, out, shape, compile_now)
            return out

    def _call(self, key: tuple, module: nn.Module, x: Tensor, shape: tuple, compile_now: bool):
        if self.compiler is None:
            return module(x)
        return self.compiler(key, module, x, shape, compile_now or self.compile != "auto")

    def _stream_pool(self) -> ThreadPoolExecutor:
        """Worker threads that each run one share of a batch with one intra-op thread, so the
        cores work on different images instead of meeting at a barrier after every small op."""
        if self._pool is None:
            self._pool = single_threaded_pool(self.streams)
        return self._pool

    def __getstate__(self):
        raise TypeError(
            "a Predictor cannot be pickled or copied (it holds packed weights, compiled code, threads and "
            "runtime sessions): pass the model (or its weights file) and build a Predictor where it runs"
        )

    def __repr__(self) -> str:
        return (
            f"Predictor(backend={self.backend!r}, engine={self.engine!r}, precision={self.precision!r}, "
            f"compile={self.compile!r}, channels_last={self.channels_last}, micro_batch={self.micro_batch}, "
            f"threads={self.threads or torch.get_num_threads()})"
        )
