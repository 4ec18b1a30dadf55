"""Compiled shapes: which calls may compile (a bounded, freezable set of (output, batch shape)),
and the torch backend's compiler of network pieces (oneDNN graph or inductor), which compiles a
piece at once or, with ``"auto"``, once its shape repeats.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .onednn import OneDnnFusion, from_onednn

__all__ = ["AUTO_COMPILE_CALLS", "COMPILERS", "COMPILE_PAYBACK_CALLS", "MAX_COMPILED_SHAPES", "CompiledShapes",
           "PieceCompiler", "compile_module"]

COMPILERS = ("onednn-graph", "inductor")
AUTO_COMPILE_CALLS = 10
"""With ``compile="auto"``, the number of runs of one input shape after which it is compiled."""
COMPILE_PAYBACK_CALLS = 64
"""Calls of one shape that repay compiling it, for a caller that knows how many are coming
(:meth:`~fastvit.runtime.predictor.Predictor.expect`). Measured for T8 at batch 32 on 2 cores:
compiling takes 1.3 s and saves 30 ms per call, so about 45 calls."""
MAX_COMPILED_SHAPES = 8
"""Input shapes (per output) a Predictor compiles at most; others run uncompiled. Each compiled
shape holds its own frozen graph and oneDNN primitives, so without a bound a caller that sends
many batch sizes (a dynamic batcher) grows memory and keeps stalling on the compiler."""


class CompiledShapes:
    """The (output, batch shape) pairs whose calls may be compiled: at most ``limit`` of them, first
    come first served, and none added once :meth:`freeze` is called."""

    def __init__(self, limit: int = MAX_COMPILED_SHAPES):
        self.limit = limit
        self.admitted: set[tuple[str, tuple[int, ...]]] = set()
        self.frozen = False

    def admit(self, shape: tuple[str, tuple[int, ...]]) -> bool:
        """Whether calls of ``shape`` may compile: one admitted before, or a new one while there is room."""
        if shape in self.admitted:
            return True
        if self.frozen or len(self.admitted) >= self.limit:
            return False
        self.admitted.add(shape)
        return True

    def freeze(self) -> None:
        self.frozen = True


class PieceCompiler:
    """Compiles the pieces a call runs (the whole network, or a stage on a chunk), one compiled
    callable per (piece, input shape), for the calls :class:`CompiledShapes` admits.

    ``mode`` is ``"auto"`` (a piece compiles with the oneDNN graph compiler once it has run
    :data:`AUTO_COMPILE_CALLS` times; a failure leaves it uncompiled, with a warning) or one of
    :data:`COMPILERS` (compile on first use).
    """

    def __init__(self, mode: str, shapes: CompiledShapes):
        self.mode, self.shapes = mode, shapes
        self.pieces: dict[tuple, Callable] = {}
        self._runs: dict[tuple, int] = {}  # runs per piece key, for "auto"
        self._lock = threading.Lock()

    def __call__(self, key: tuple, module: nn.Module, x: Tensor, shape: tuple, now: bool):
        """``module(x)``, compiled when the call's ``shape`` is admitted and (``now`` or the mode says)
        it is time to."""
        # A compiled piece keeps the thread count it was built with: built on the 2-thread caller and
        # run on a 1-thread stream, it starts a 2-thread OpenMP team inside that stream, after which
        # every oneDNN call in the process pays tens of microseconds more (batch 1 of T8: 7 -> 12 ms).
        # So each thread count compiles its own.
        key = (*key, tuple(x.shape), x.dtype, x.is_contiguous(), torch.get_num_threads())
        compiled = self.pieces.get(key)
        if compiled is not None:
            return compiled(x)
        if not now and self.mode == "auto":
            with self._lock:  # streams run the same pieces: an unlocked count would make the compile time vary
                if len(self._runs) > 4 * MAX_COMPILED_SHAPES * 64:  # counts of shapes that never compiled
                    self._runs.clear()
                self._runs[key] = runs = self._runs.get(key, 0) + 1
            if runs < AUTO_COMPILE_CALLS:
                return module(x)
        with self._lock:
            if key not in self.pieces:
                if not self.shapes.admit(shape):
                    return module(x)
                self.pieces[key] = self._compile(module, x)
        return self.pieces[key](x)

    def _compile(self, module: nn.Module, x: Tensor) -> Callable:
        if self.mode != "auto":
            return compile_module(module, x, self.mode)
        try:
            return compile_module(module, x, "onednn-graph")
        except Exception as error:  # an automatic optimisation must never break inference
            warnings.warn(f"compiling for input {tuple(x.shape)} failed, running it uncompiled: {error}")
            return module

    def fusion(self):
        """The oneDNN graph fuser is process-wide TorchScript state: on only while we run."""
        return OneDnnFusion(enabled=self.mode in ("onednn-graph", "auto"))


def compile_module(module: nn.Module, example: Tensor, mode: str) -> Callable:
    """``module`` compiled for inputs shaped like ``example`` (``mode``: one of :data:`COMPILERS`)."""
    plain = from_onednn(copy.deepcopy(module))  # both compilers fuse oneDNN calls themselves
    if mode == "inductor":
        compiled = torch.compile(plain, dynamic=False, options={"freezing": True})
        compiled(example)
        return compiled
    # oneDNN graph: TorchScript's LLGA fuser partitions the frozen graph into oneDNN compiled
    # partitions (conv + GELU / add fused), which run with far less per-op overhead.
    with warnings.catch_warnings(), OneDnnFusion():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, not gone
        traced = torch.jit.freeze(torch.jit.trace(plain, example, check_trace=False, strict=False))
        for _ in range(2):  # profiling runs, after which the fused graph is in place
            traced(example)
    return traced
