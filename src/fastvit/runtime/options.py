"""The Predictor's options checked before anything is built: names, combinations that cannot run,
counts, and the input size it is tuned for."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .compiling import COMPILERS
from .onednn import onednn_available
from .precision import PRECISIONS, PrecisionNotSupportedError

__all__ = ["BACKENDS", "ENGINES", "check_batch", "check_counts", "check_input_size", "check_options", "check_whole",
           "input_size_of"]

BACKENDS = ("torch", "onnxruntime", "openvino")
ENGINES = ("onednn", "eager")


def check_options(
    precision: str, backend: str, engine: str | None, compile: bool | str, on_cpu: bool, emulate_bf16: bool,
    allow_emulated_bf16: bool,
) -> tuple[bool | str, str | None]:
    """Validate the Predictor's options; returns (compile mode or False, engine) as they apply."""
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
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if precision == "bf16":
        if backend == "onnxruntime":
            raise ValueError("precision='bf16' is available with backend='torch' or 'openvino'")
        if emulate_bf16 and not (allow_emulated_bf16 and backend == "torch"):
            raise PrecisionNotSupportedError(
                f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 (AVX512-BF16, "
                "AVX-NE-CONVERT or AMX): bf16 kernels fall back to reference code here, many times slower than fp32. "
                "Use fp32 (precision='fp32'; --precision fp32 on the command line); in Python, allow_emulated_bf16=True "
                "emulates bf16 numerics at fp32 speed (to study accuracy, not for speed)"
            )
        if emulate_bf16 and compile and compile != "auto":
            raise ValueError("emulated bf16 cannot be compiled")
    if backend != "torch":
        return False, None
    fast = on_cpu and onednn_available() and not emulate_bf16
    if engine == "onednn" and not fast:
        raise ValueError("engine='onednn' needs a CPU model, a torch build with oneDNN and fp32 or native bf16")
    if compile == "auto" and not fast:
        compile = False
    return compile, engine or ("onednn" if fast else "eager")


def check_counts(micro_batch: int | None, streams: int | None, threads: int | None) -> None:
    for name, count, least in (("micro_batch", micro_batch, 0), ("streams", streams, 1), ("threads", threads, 1)):
        if count is not None:
            check_whole(name, count, least)


def check_whole(name: str, count: object, least: int) -> None:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, got {count!r}")


def input_size_of(model: nn.Module, input_size: Sequence[int] | None, pretrained_cfg: dict) -> tuple[int, ...]:
    """(C, H, W) the Predictor is tuned for: ``input_size``, else the weights' own size with the
    model's channel count (a model made with ``in_chans=1`` keeps its weights' 3-channel config)."""
    channels = getattr(model, "in_chans", None)
    if input_size is not None:
        return check_input_size(model, input_size)
    size = tuple(pretrained_cfg.get("input_size") or (3, 256, 256))
    return (channels or size[0], *size[1:])


def check_input_size(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> tuple[int, int, int]:
    """``input_size`` as a tuple, or a ValueError unless it is (C, H, W) of whole positive sizes with the
    model's channel count (and ``batch_size`` a whole number of at least 1)."""
    size = tuple(input_size)
    channels = getattr(model, "in_chans", None)
    if len(size) != 3 or (channels is not None and size[0] != channels):
        raise ValueError(f"input_size must be (C, H, W) with C = {channels or 'the model channels'}, got {size}")
    for name, count in zip(("channels", "height", "width"), size):
        check_whole(f"input_size's {name}", count, 1)
    check_whole("batch_size", batch_size, 1)
    return tuple(int(count) for count in size)


def check_batch(images: object, channels: int) -> None:
    """A batch a Predictor runs: a floating-point (B, C, H, W) tensor of transformed images."""
    expected = f"a (B, {channels}, H, W) batch"
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected {expected} as a float tensor, got {type(images).__name__} "
                        "(predictor.transform turns a PIL image into one image's tensor)")
    if not images.is_floating_point():
        raise TypeError(f"expected {expected} of transformed (floating-point) images, got {images.dtype} "
                        "(predictor.transform makes them from PIL images)")
    if images.ndim != 4 or images.shape[1] != channels or 0 in images.shape[2:]:
        raise ValueError(f"expected {expected} of non-empty images, got shape {tuple(images.shape)}")
