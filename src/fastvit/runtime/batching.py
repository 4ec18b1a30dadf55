"""How the Predictor cuts a batch: the network split at its stage boundaries (so each stage runs in
chunks sized to its activations), and streams that run shares of a batch on single-threaded workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

__all__ = ["BACKEND_CHUNK_IMAGES", "MICRO_BATCH_BYTES", "MIN_IMAGES_PER_STREAM", "Embedder", "concat_batches",
           "even_chunks", "segment_activation_bytes", "segments", "single_threaded_pool"]

MICRO_BATCH_BYTES = 8 << 20
"""A large batch runs stage by stage, each stage in chunks of as many images as keep its largest
activation under this budget: the early, high-resolution stages a few images at a time (their
activations stay in cache), the late ones many at a time (their small convolutions need the batch
to keep both cores busy)."""
MIN_IMAGES_PER_STREAM = 4
"""A batch is split across streams only when each gets at least this many images."""
BACKEND_CHUNK_IMAGES = 4
"""ONNX Runtime and OpenVINO run the whole network on what they are given, and a large batch's
activations leave the cache: the backends get a batch of more than twice this many images in chunks
of at most this many. T8 at 256×256 on 2 cores, Predictor throughput in chunks of 4 against whole
batches (alternating processes): batch 32 OpenVINO fp32 +4 to +9 %, bf16 +2 to +5 %, ONNX Runtime
+12 to +14 %; batch 16 −1 to +7 %; batch 8 −7 to +5 % (at 224×192 −6 to +1 %), so it runs whole.
Chunks of 2 or 8 were no better than 4."""


class _Tail(nn.Module):
    """final_conv and head of a (folded) FastVit: logits, or pooled pre-logits for ``embed``."""

    def __init__(self, model: nn.Module, pre_logits: bool):
        super().__init__()
        self.final_conv, self.head, self.pre_logits = model.final_conv, model.head, pre_logits
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final_conv(x), pre_logits=self.pre_logits)


def even_chunks(batch: Tensor, most: int) -> tuple[Tensor, ...]:
    """``batch`` cut into as few chunks of at most ``most`` images as possible, as even as that
    allows (16 images, at most 7 a chunk: 6, 5, 5 rather than 7, 7, 2)."""
    return batch.tensor_split(max(1, -(-batch.shape[0] // most)))


def concat_batches(parts: list) -> Tensor | list[Tensor]:
    """The outputs of a batch's chunks joined along the batch: tensors, or lists of maps
    (``features_only``) joined map by map."""
    if isinstance(parts[0], list):
        return [torch.cat(maps) for maps in zip(*parts)]
    return torch.cat(parts)


def segments(model: nn.Module, output: str) -> list[nn.Module] | None:
    """The network cut at its stage boundaries, where the activation size per image changes most:
    the stem with the first stage, each later stage, the tail; None for a network without that
    layout (features_only).

    The first stage runs at the stem's output size, so one chunk size suits both, and running them
    as one piece hands each chunk's stem output to the stage while it is still in cache instead of
    concatenating the batch's largest activation in between (T8 at batch 32 on 2 cores: +7 %)."""
    if not all(hasattr(model, name) for name in ("stem", "stages", "final_conv", "head")):
        return None
    first, *later = model.stages
    return [nn.Sequential(model.stem, first).train(False), *later, _Tail(model, pre_logits=output == "embed")]


def segment_activation_bytes(model: nn.Module, image: Tensor) -> list[int] | None:
    """Bytes of the largest output of any module inside each segment, for ``image`` (a batch of one,
    in the dtype and memory format the model runs), or None for a network without segments.

    Measured on a real forward pass, so an engine that packs its weights per input size finds them
    packed for this size when the first real batch comes."""
    parts = segments(model, "forward")
    if parts is None:
        return None
    largest = [0] * len(parts)
    current = 0

    def hook(_module, _inputs, output):
        if isinstance(output, Tensor) and output.ndim >= 2:
            largest[current] = max(largest[current], output[0].numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        x = image
        with torch.inference_mode():
            for current, segment in enumerate(parts):
                x = segment(x)
    except Exception:  # noqa: BLE001 - a sizing heuristic must never break prediction
        return None
    finally:
        for handle in handles:
            handle.remove()
    return largest


class Embedder(nn.Module):
    """forward_features + pooled pre-logits of a (folded) FastVit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def single_threaded_pool(workers: int) -> ThreadPoolExecutor:
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

