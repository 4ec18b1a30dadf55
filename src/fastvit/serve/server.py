"""Running the service: the listening socket, uvicorn, worker processes behind one port, and a clean
stop on SIGTERM (no new connections, the requests in flight answered, exit status 0)."""

from __future__ import annotations

import copy
import logging
import logging.config
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from ..errors import FastViTError
from .app import create_app
from .batcher import new_model_thread
from .service import ModelService
from .settings import ServeSettings

__all__ = ["listen", "reexec_with_short_openmp_spins", "serve"]

logger = logging.getLogger("fastvit.serve")

SHUTDOWN_GRACE_S = 5
"""Seconds a stopping server gives requests in flight beyond the request timeout."""
WORKER_HEALTHCHECK_S = 60
"""Seconds a worker process may take to answer its supervisor (building a model can take a while)."""
ORPHAN_CHECK_S = 1.0
"""How often a worker process looks whether its supervisor is still there."""
OPENMP_SPIN_COUNT = "10000"
"""How long (``GOMP_SPINCOUNT`` spins, a fraction of a millisecond) an idle OpenMP thread of the
model spins before it sleeps; GNU OpenMP's default spins for milliseconds."""
OPENMP_WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def reexec_with_short_openmp_spins() -> None:
    """Restart this process (same command, same PID) with :data:`OPENMP_SPIN_COUNT`, unless its
    environment already says how OpenMP threads wait.

    After each model call on two threads, the second thread spins for milliseconds in case another
    parallel op follows. In a server that time belongs to the threads decoding the next uploads and
    to the batch-splitting streams: at 32 concurrent requests on 2 cores, T8 served 8-12 % more
    images/s with short spins, and latency at concurrency 1 did not change. GNU OpenMP reads the
    setting once, when torch loads it, hence the restart.
    """
    if sys.platform != "linux" or any(name in os.environ for name in OPENMP_WAIT_VARIABLES):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "GOMP_SPINCOUNT": OPENMP_SPIN_COUNT})


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM (returns once the requests in flight are answered) or SIGINT
    (KeyboardInterrupt).

    The address is taken and the model built before anything is served, so a busy port, an unknown
    model or unreadable weights fail here (FastViTError, OSError) with nothing started. With
    ``workers`` > 1, each worker process then builds its own model.
    """
    with listen(settings.host, settings.port) as sock:
        model_thread = new_model_thread()
        service = model_thread.submit(ModelService.from_settings, settings).result()
        log_config = copy.deepcopy(LOGGING_CONFIG)
        log_config["loggers"]["fastvit.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
        logging.config.dictConfig(log_config)
        if settings.workers == 1:
            app = create_app(settings, service, model_thread)
        else:
            del service  # it only proved that the model loads: each worker builds its own
            model_thread.shutdown()
            app = partial(_worker_app, settings)
        config = uvicorn.Config(
            app, factory=settings.workers > 1, workers=settings.workers, log_config=log_config,
            access_log=settings.access_log, lifespan="on", timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            timeout_graceful_shutdown=math.ceil(settings.timeout) + SHUTDOWN_GRACE_S,
        )
        host, port = sock.getsockname()[:2]
        logger.info("listening on http://%s:%d with %d worker process(es); ready once warmed up (GET /readyz)",
                    f"[{host}]" if ":" in host else host, port, settings.workers)
        if settings.workers == 1:
            with _sigterm_ends_quietly():
                uvicorn.Server(config).run(sockets=[sock])
        else:
            Multiprocess(config, sockets=[sock]).run()


def _worker_app(settings: ServeSettings):
    """The app of one worker process (built there), which stops as on SIGTERM once its supervisor is
    gone: killed with SIGKILL, the supervisor cannot stop it, and an orphaned worker would go on
    answering on the port, holding it against the next server."""
    supervisor = os.getppid()

    def stop_when_orphaned() -> None:
        while os.getppid() == supervisor:
            time.sleep(ORPHAN_CHECK_S)
        logger.info("the supervisor process %d is gone: stopping", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_orphaned, name="fastvit-orphan-watch", daemon=True).start()
    return create_app(settings)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), inheritable by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol is named so that the connections accepted from it name it too: asyncio turns off
    # Nagle's algorithm only on sockets that say they are TCP, and without that each response
    # waits ~40 ms for the client's delayed ACK on a keep-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise FastViTError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _sigterm_ends_quietly() -> Iterator[None]:
    """uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found,
    which by default ends the process with status 143: a no-op handler lets it return instead."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
