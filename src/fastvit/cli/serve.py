"""``fastvit serve``: the HTTP service (``pip install 'fastvit[serve]'``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..runtime.predictor import BACKENDS, PRECISIONS
from .common import (
    add_decode_option,
    add_model_options,
    image_side,
    model_name,
    non_negative_number,
    port,
    positive,
    positive_number,
    read_labels,
)

API_KEY_VARIABLE = "FASTVIT_API_KEY"


def cmd_serve(args: argparse.Namespace) -> None:
    from ..serve import ServeSettings, serve
    from ..serve.server import reexec_with_short_openmp_spins

    if args.whole_process:
        reexec_with_short_openmp_spins()

    settings = ServeSettings(
        model=model_name(args.model, args.checkpoint),
        checkpoint=args.checkpoint,
        class_names=tuple(read_labels(Path(args.labels))) if args.labels else None,
        input_size=tuple(args.input_size) if args.input_size else None,
        precision=args.precision,
        backend=args.backend,
        decode=args.decode,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout=args.timeout,
        upload_timeout=args.upload_timeout,
        max_upload_mb=args.max_upload_mb,
        api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
        access_log=args.access_log,
    )
    serve(settings)


_EPILOG = """routes: POST /v1/predict (?top_k=5), POST /v1/predict/batch (multipart, several files),
POST /v1/embed (?normalize=true, ?projected=true; Accept: application/octet-stream for float32 bytes),
GET /v1/models, /healthz, /readyz, /metrics (Prometheus), /docs and /openapi.json, and the web page at /.
Images are uploaded as the request body (Content-Type image/* or application/octet-stream) or as
multipart/form-data files; the server never fetches a URL.

examples:
  fastvit serve                                        # http://127.0.0.1:8000
  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' 'http://127.0.0.1:8000/v1/embed?normalize=true'

SIGTERM stops taking connections, answers the requests in flight, and exits with status 0.
"""


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "serve", help="an HTTP service that classifies and embeds images, with a web page",
        description="Serve a model over HTTP: concurrent requests are decoded on a thread pool and run in\n"
        "dynamic batches; errors are JSON with a reason. Needs: pip install 'fastvit[serve]'.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--labels", metavar="FILE",
                        help="class names, one per line, for a model fine-tuned on other classes (default: those a "
                             "checkpoint written by fastvit train holds, else the ImageNet-1k names for 1000 outputs)")
    parser.add_argument("--input-size", nargs=2, type=image_side, metavar=("H", "W"), help="default: the model's own")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="compute precision (default fp32)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="runtime (default torch)")
    add_decode_option(parser)
    where = parser.add_argument_group("listening")
    where.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    where.add_argument("--port", type=port, default=8000, help="default 8000; 0 picks a free port (printed at start)")
    where.add_argument("--workers", type=positive, default=1, metavar="N",
                       help="server processes sharing the port, each with its own model (default 1)")
    where.add_argument("--threads", type=positive, metavar="N",
                       help="torch and decoding threads per process (default: the CPUs shared by the processes)")
    where.add_argument("--api-key", metavar="KEY",
                       help=f"require this key on every route but /healthz (default: ${API_KEY_VARIABLE}; the "
                            "variable keeps the key out of the process list)")
    where.add_argument("--access-log", action="store_true", help="log every request")
    batching = parser.add_argument_group("batching and limits")
    batching.add_argument("--max-batch-size", type=positive, default=32, metavar="N",
                          help="most images per gathered batch (default 32)")
    batching.add_argument("--max-wait-ms", type=non_negative_number, default=50.0, metavar="MS",
                          help="how long a batch waits for images still being decoded; a lone request "
                               "never waits (default 50)")
    batching.add_argument("--max-queue", type=positive, default=256, metavar="N",
                          help="most images held at once; beyond it requests get 503 with Retry-After (default 256)")
    batching.add_argument("--timeout", type=positive_number, default=30.0, metavar="SECONDS",
                          help="a request not answered in this time gets 504 (default 30)")
    batching.add_argument("--upload-timeout", type=positive_number, default=30.0, metavar="SECONDS",
                          help="an upload not arrived in this time gets 408 (default 30)")
    batching.add_argument("--max-upload-mb", type=positive_number, default=20.0, metavar="MB",
                          help="largest request body in MiB; larger ones get 413 (default 20)")
    parser.set_defaults(run=cmd_serve)
