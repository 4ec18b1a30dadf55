"""Dynamic batching: uploads decoded on a thread pool, gathered into model calls of a few warmed batch
sizes on one model thread, results handed back to each caller; a bounded queue and a deadline per request.

A gathered batch of ``n`` images runs as the calls of *bucket* sizes (1, 2, 4, ... up to
``max_batch_size``) that take it fastest by the time each call took at warm-up; the last call is
padded when that is cheaper than another call. Only those sizes ever reach the model, so it compiles
them once before the server says it is ready and never again, and its memory stays flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data import stack_images
from ..errors import ImageLoadError
from ..runtime.batching import single_threaded_pool
from ..runtime.predictor import MAX_COMPILED_SHAPES
from .metrics import Metrics

__all__ = ["DynamicBatcher", "QueueFull", "RequestTimeout", "bucket_sizes", "new_model_thread", "plan_calls"]


class QueueFull(Exception):
    """The server holds as many images as it may; ``retry_after`` estimates the seconds until it has room."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """A request was not answered within the server's timeout."""


def new_model_thread() -> ThreadPoolExecutor:
    """The one thread that builds, warms up and runs a server's model. torch's OpenMP gives every
    thread that runs parallel ops a team of threads of its own, and two teams on the same cores slow
    every op (batch 1 of T8 built on one thread and run on another: 8 -> 13 ms)."""
    return ThreadPoolExecutor(1, thread_name_prefix="fastvit-model")


def bucket_sizes(max_batch_size: int, limit: int = MAX_COMPILED_SHAPES) -> list[int]:
    """The batch sizes the model is called with: 1, 2, 4, ... below ``max_batch_size``, and
    ``max_batch_size`` itself; at most ``limit`` of them (dropping 2, 4, ... first)."""
    sizes = [1 << power for power in range(max_batch_size.bit_length()) if 1 << power < max_batch_size]
    sizes.append(max_batch_size)
    while len(sizes) > limit:
        del sizes[1]
    return sizes


def plan_calls(costs: Mapping[int, float], most: int) -> list[list[int]]:
    """For each number of images ``n`` from 0 to ``most``: the bucket sizes of the calls that take
    ``n`` images in the least time, given the seconds a call of each size takes. Only the last call
    may be padded (its size exceeds the images left for it)."""
    best = [0.0] + [math.inf] * most
    first = [0] * (most + 1)
    for count in range(1, most + 1):
        for size, cost in costs.items():
            total = cost + best[max(0, count - size)]
            if total < best[count]:
                best[count], first[count] = total, size
    plans: list[list[int]] = [[]]
    for count in range(1, most + 1):
        plans.append([first[count], *plans[max(0, count - first[count])]])
    return plans


@dataclass
class _Waiting:
    image: Tensor
    result: asyncio.Future


class DynamicBatcher:
    """Turns concurrent requests into batched model calls.

    Args:
        decode: upload bytes -> the model's uint8 input for one image (may raise ImageLoadError).
        model: a uint8 batch of a bucket size -> outputs indexable by image.
        max_batch_size: most images per gathered batch.
        max_wait: seconds a batch waits for images that are still being decoded.
        max_queue: most images held at once, from admission to answer.
        timeout: seconds from admission to answer.
        decode_threads: threads decoding uploads.
        metrics: where batch sizes and padding are counted.
        model_thread: the :func:`new_model_thread` that built ``model`` (default: a new one).
    """

    def __init__(
        self,
        decode: Callable[[bytes], Tensor],
        model: Callable[[Tensor], Any],
        *,
        max_batch_size: int,
        max_wait: float,
        max_queue: int,
        timeout: float,
        decode_threads: int,
        metrics: Metrics,
        model_thread: ThreadPoolExecutor | None = None,
    ):
        self._decode, self._model, self.metrics = decode, model, metrics
        self.max_batch_size, self.max_wait, self.max_queue, self.timeout = max_batch_size, max_wait, max_queue, timeout
        # One torch thread each: the pool's threads already decode side by side, and OpenMP teams of
        # their own would crowd the cores the model's threads need.
        self._decode_pool = single_threaded_pool(decode_threads)
        self._model_thread = model_thread or new_model_thread()
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._costs: Mapping[int, float] = {}
        self._plans: list[list[int]] = []
        self._task: asyncio.Task | None = None
        self.in_flight = 0  # images admitted and not answered yet
        self.decoding = 0

    @property
    def ready(self) -> bool:
        return self._task is not None

    @property
    def queue_depth(self) -> int:
        """Images decoded and waiting for the model."""
        return len(self._waiting)

    async def start(self, prepare: Callable[[Sequence[int]], Mapping[int, float]]) -> None:
        """Warm the model for the bucket sizes on the model thread (``prepare`` returns the seconds
        per call of each size), then start batching."""
        loop = asyncio.get_running_loop()
        self._costs = await loop.run_in_executor(self._model_thread, prepare, bucket_sizes(self.max_batch_size))
        self._plans = plan_calls(self._costs, self.max_batch_size)
        self._task = asyncio.create_task(self._batch_forever(), name="fastvit-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    async def submit(self, uploads: Sequence[bytes]) -> list[Any]:
        """The model's outputs for each upload, or the ImageLoadError that says why it cannot be read.

        Raises:
            QueueFull: taking these images would exceed ``max_queue``.
            RequestTimeout: the answer took longer than ``timeout``.
        """
        if self.in_flight + len(uploads) > self.max_queue:
            raise QueueFull(self.retry_after())
        self.in_flight += len(uploads)
        try:
            return await asyncio.wait_for(asyncio.gather(*map(self._one, uploads)), self.timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no answer within the server's timeout of {self.timeout:g} s") from None
        finally:
            self.in_flight -= len(uploads)

    def retry_after(self) -> int:
        """Seconds until the images held now have gone through the model, by the warm-up timings."""
        largest = max(self._costs, default=0)
        if not largest:
            return 1
        return max(1, math.ceil(self.in_flight / largest * self._costs[largest]))

    async def _one(self, upload: bytes) -> Any:
        loop = asyncio.get_running_loop()
        self.decoding += 1
        try:
            image = await loop.run_in_executor(self._decode_pool, self._decode, upload)
        except ImageLoadError as error:
            return error
        finally:
            self.decoding -= 1
        waiting = _Waiting(image, loop.create_future())
        self._waiting.append(waiting)
        self._arrived.set()
        return await waiting.result  # cancelled on timeout: the batcher then skips it

    async def _batch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            # Images still being decoded belong to requests already here: wait a little for them
            # rather than run a small batch now and a second one right after.
            deadline = loop.time() + self.max_wait
            while len(self._waiting) < self.max_batch_size and self.decoding and loop.time() < deadline:
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            self._arrived.clear()
            batch = self._take()
            if not batch:
                continue
            try:
                outputs = await loop.run_in_executor(self._model_thread, self._run, [job.image for job in batch])
            except Exception as error:
                outputs = [error] * len(batch)
            for job, output in zip(batch, outputs):
                if not job.result.done():
                    if isinstance(output, Exception):
                        job.result.set_exception(output)
                    else:
                        job.result.set_result(output)
            if self._waiting:
                self._arrived.set()

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._waiting and len(batch) < self.max_batch_size:
            job = self._waiting.popleft()
            if not job.result.done():  # done here means cancelled: its request timed out
                batch.append(job)
        return batch

    def _run(self, images: list[Tensor]) -> list[Any]:
        """The model on ``images`` in the planned calls (on the model thread)."""
        plan = self._plans[len(images)]
        rows: list[Any] = []
        for size in plan:
            part = images[len(rows):len(rows) + size]
            padding = [torch.zeros_like(part[0])] * (size - len(part))
            outputs = self._model(stack_images(part + padding))
            rows.extend(outputs[index] for index in range(len(part)))
        self.metrics.observe_batch(len(images), plan)
        return rows
