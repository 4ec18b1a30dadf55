"""What a server is told on the command line, in one picklable value (``--workers`` hands it to each process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """How to build the model and how to serve it.

    Attributes:
        model: model name or ``name.tag``; the pretrained weights unless ``checkpoint`` is given.
        checkpoint: local weights file.
        class_names: names of the classifier's outputs, in order (``--labels``); None: those a
            checkpoint written by ``fastvit train`` holds, else the ImageNet names for 1000
            outputs, else none (``/v1/predict`` is then unavailable).
        input_size: (H, W) the model runs at; None: the weights' own.
        precision, backend: as :class:`~fastvit.runtime.predictor.Predictor` takes them.
        decode: how uploads become pixels: ``"exact"`` (timm's transform, bit for bit) or ``"fast"``
            (see :mod:`fastvit.data.decoding`).
        host, port: where to listen (port 0: any free port, printed at start).
        workers: server processes sharing the port, each with its own model.
        threads: torch threads per process; None: this machine's CPUs shared by the processes.
        max_batch_size: most images in one model call.
        max_wait_ms: how long a batch waits for images still being decoded (a lone request never
            waits). Run while uploads that arrived with it are decoding, a batch shares the cores
            with the decoders, both go slower, and the next batch is small: on 2 cores, waiting up
            to 50 ms served T8 about 10 % more images/s at concurrency 8 and 32 than 5 ms.
        max_queue: most images the server holds at once (decoding, waiting or in the model);
            requests beyond it are answered 503 with ``Retry-After``.
        timeout: seconds a request may take from its upload being read to its answer (else 504).
        upload_timeout: seconds a request's upload may take to arrive (else 408): a client that stalls
            its upload would otherwise hold its connection for ever.
        max_upload_mb: largest request body, in MiB (else 413).
        api_key: when set, every route but ``/healthz`` needs it.
        access_log: log every request.
    """

    model: str
    checkpoint: str | None = None
    class_names: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    precision: str = "fp32"
    backend: str = "torch"
    decode: str = "exact"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 50.0
    max_queue: int = 256
    timeout: float = 30.0
    upload_timeout: float = 30.0
    max_upload_mb: float = 20.0
    api_key: str | None = None
    access_log: bool = False

    @property
    def threads_per_worker(self) -> int:
        return self.threads or max(1, len(os.sched_getaffinity(0)) // self.workers)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))
