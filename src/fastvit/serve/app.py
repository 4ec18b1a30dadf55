"""The HTTP API and the web page on Starlette: routes, the model's lifecycle (built, warmed up, then
ready), and errors as JSON. The API key and request metrics are the :mod:`.gatekeeper`'s.

Every answer to a request the server refuses is a JSON object with a ``reason``
(:func:`~fastvit.serve.errors.error_response`); an unexpected failure is logged and answered 500
without its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ImageLoadError
from .batcher import DynamicBatcher, QueueFull, RequestTimeout, new_model_thread
from .errors import ApiError, error_response
from .gatekeeper import Gatekeeper
from .metrics import CONTENT_TYPE, Metrics
from .openapi import openapi_document
from .service import ModelOutputs, ModelService
from .settings import ServeSettings
from .uploads import Upload, read_uploads

__all__ = ["create_app"]

logger = logging.getLogger("fastvit.serve")

DEFAULT_TOP_K = 5


@dataclass
class Serving:
    """What the routes of one server process share."""

    settings: ServeSettings
    metrics: Metrics
    service: ModelService | None = None
    batcher: DynamicBatcher | None = None
    failure: str | None = None  # why the model could not be warmed up
    page: dict[str, str] = field(default_factory=dict)

    def ready(self) -> tuple[ModelService, DynamicBatcher]:
        """The model and batcher, or 503 while the model loads and warms up."""
        if self.failure:
            raise ApiError(503, self.failure)
        if self.service is None or self.batcher is None or not self.batcher.ready:
            raise ApiError(503, "the model is still loading and warming up", {"Retry-After": "2"})
        return self.service, self.batcher


def create_app(settings: ServeSettings, service: ModelService | None = None,
               model_thread: ThreadPoolExecutor | None = None) -> Starlette:
    """The ASGI app of one server process; it builds the model from ``settings`` (unless given one,
    with the :func:`~fastvit.serve.batcher.new_model_thread` that built it) when it starts and says
    ready (``/readyz``) once the model is warmed up."""
    metrics = Metrics()
    serving = Serving(settings, metrics)
    static = resources.files(__package__).joinpath("static")
    serving.page = {name: static.joinpath(name).read_text(encoding="utf-8") for name in ("index.html", "docs.html")}

    @asynccontextmanager
    async def lifespan(app: Starlette):
        thread = model_thread or new_model_thread()
        serving.service = service or await asyncio.get_running_loop().run_in_executor(
            thread, ModelService.from_settings, settings)
        serving.batcher = DynamicBatcher(
            serving.service.decode, serving.service, max_batch_size=settings.max_batch_size,
            max_wait=settings.max_wait_ms / 1000, max_queue=settings.max_queue, timeout=settings.timeout,
            decode_threads=settings.threads_per_worker, metrics=metrics, model_thread=thread,
        )
        metrics.add_gauge("fastvit_queue_depth", "Images decoded and waiting for the model.",
                          lambda: serving.batcher.queue_depth)
        metrics.add_gauge("fastvit_images_in_flight", "Images taken in and not answered yet.",
                          lambda: serving.batcher.in_flight)
        warm_up = asyncio.create_task(_warm_up(serving))
        yield
        warm_up.cancel()
        await serving.batcher.close()

    routes = [
        Route("/", page),
        Route("/docs", docs),
        Route("/openapi.json", openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", prometheus_metrics),
        Route("/v1/models", models),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/predict/batch", predict_batch, methods=["POST"]),
        Route("/v1/embed", embed, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static"),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, ClientDisconnect: _client_gone,
                Exception: _internal_error}
    paths = tuple(route.path for route in routes if isinstance(route, Route))
    gatekeeper = Middleware(Gatekeeper, api_key=settings.api_key, metrics=metrics, paths=paths,
                            open_paths=("/healthz",))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=[gatekeeper])
    app.state.serving = serving
    return app


async def _warm_up(serving: Serving) -> None:
    start = time.perf_counter()
    try:
        await serving.batcher.start(serving.service.prepare)
    except Exception as error:
        serving.failure = f"warming up the model failed: {type(error).__name__}: {error}"
        logger.error(serving.failure)
        return
    sizes = ", ".join(map(str, serving.service.batch_sizes))
    logger.info("model ready in %.1f s (batch sizes %s warmed)", time.perf_counter() - start, sizes)


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------


def _serving(request: Request) -> Serving:
    return request.app.state.serving


async def page(request: Request) -> HTMLResponse:
    """The web page: drop, pick or paste an image; see its classes and embedding."""
    return HTMLResponse(_serving(request).page["index.html"])


async def docs(request: Request) -> HTMLResponse:
    """The API's documentation, rendered from /openapi.json."""
    return HTMLResponse(_serving(request).page["docs.html"])


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(api_key=bool(_serving(request).settings.api_key)))


async def healthz(request: Request) -> JSONResponse:
    """The process answers (it may still be warming up: see /readyz)."""
    return JSONResponse({"status": "alive"})


async def prometheus_metrics(request: Request) -> Response:
    return Response(_serving(request).metrics.render(), media_type=CONTENT_TYPE)


async def readyz(request: Request) -> JSONResponse:
    _serving(request).ready()
    return JSONResponse({"status": "ready"})


async def models(request: Request) -> JSONResponse:
    serving = _serving(request)
    service, _ = serving.ready()
    settings = serving.settings
    limits = {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
              "max_queue": settings.max_queue, "timeout": settings.timeout,
              "upload_timeout": settings.upload_timeout, "max_upload_mb": settings.max_upload_mb}
    return JSONResponse({"models": [{**service.describe(), "serving": limits}]})


async def predict(request: Request) -> JSONResponse:
    """Top-k classes of one image."""
    service, _ = _serving(request).ready()
    top_k = _top_k_parameter(request, service)
    [output] = await _run(request, several=False)
    return JSONResponse({"model": service.model_name, "top_k": _top_k(output, top_k, service)})


async def predict_batch(request: Request) -> JSONResponse:
    """Top-k classes of each image of a multipart upload; an image that cannot be read gets its own
    status and reason instead."""
    service, _ = _serving(request).ready()
    top_k = _top_k_parameter(request, service)
    uploads = await _read(request, several=True)
    results = []
    for upload, output in zip(uploads, await _outputs(request, uploads)):
        result: dict[str, Any] = {"filename": upload.filename}
        if isinstance(output, ApiError):
            result.update(status=output.status, reason=output.reason)
        else:
            result.update(status=200, top_k=_top_k(output, top_k, service))
        results.append(result)
    return JSONResponse({"model": service.model_name, "results": results})


def _prefers_bytes(accept: str) -> bool:
    """Whether an Accept header asks for ``application/octet-stream`` (with a q-value above 0) at least
    as much as for ``application/json``."""
    quality = {}
    for entry in accept.split(","):
        media, *parameters = (part.strip() for part in entry.split(";"))
        q = next((value for name, _, value in (p.partition("=") for p in parameters) if name.strip() == "q"), "1")
        try:
            quality[media.lower()] = float(q)
        except ValueError:
            quality[media.lower()] = 0.0
    as_bytes = quality.get("application/octet-stream", 0.0)
    return as_bytes > 0 and as_bytes >= quality.get("application/json", 0.0)


async def embed(request: Request) -> Response:
    """The pooled embedding of one image (or with ``projected``, the model's own output: a
    MobileCLIP tower's CLIP embedding), as JSON or as little-endian float32 bytes."""
    service, _ = _serving(request).ready()
    normalize = _flag_parameter(request, "normalize")
    projected = _flag_parameter(request, "projected")
    if projected and service.head is None:
        raise ApiError(409, "projected=true needs a model with a head; this one has none")
    [output] = await _run(request, several=False)
    vector = output.logits if projected else output.embedding
    if normalize:
        vector = torch.nn.functional.normalize(vector, dim=-1)
    if _prefers_bytes(request.headers.get("accept", "")):
        return Response(vector.numpy().astype("<f4").tobytes(), media_type="application/octet-stream",
                        headers={"X-Embedding-Size": str(vector.numel())})
    return JSONResponse({
        "model": service.model_name, "size": vector.numel(), "norm": float(vector.norm()),
        "normalized": normalize, "projected": projected, "embedding": vector.tolist(),
    })


# ----------------------------------------------------------------------------------------------
# Uploads in, model outputs out
# ----------------------------------------------------------------------------------------------


async def _read(request: Request, several: bool) -> list[Upload]:
    """The request's uploads, which must arrive within the upload timeout. A stopping server cancels
    the uploads still coming in once its grace period is over: those get a 503."""
    settings = _serving(request).settings
    reading = read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_queue, several=several)
    try:
        return await asyncio.wait_for(reading, settings.upload_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the upload did not arrive within {settings.upload_timeout:g} s") from None
    except asyncio.CancelledError:
        raise ApiError(503, "the server is stopping: the upload was still arriving") from None


async def _run(request: Request, several: bool) -> list[ModelOutputs]:
    """The model's outputs for the request's image(s); the first one that cannot be read fails the request."""
    outputs = await _outputs(request, await _read(request, several))
    for output in outputs:
        if isinstance(output, ApiError):
            raise output
    return outputs


async def _outputs(request: Request, uploads: list[Upload]) -> list[ModelOutputs | ApiError]:
    """Each upload's model outputs, or the error that says why it cannot be read."""
    _, batcher = _serving(request).ready()
    readable = [upload.data for upload in uploads if upload.data]
    try:
        results = iter(await batcher.submit(readable))
    except QueueFull as error:
        raise ApiError(503, str(error), {"Retry-After": str(error.retry_after)}) from None
    except RequestTimeout as error:
        raise ApiError(504, str(error)) from None
    outputs: list[ModelOutputs | ApiError] = []
    for upload in uploads:
        result = next(results) if upload.data else ApiError(400, "empty upload: no image bytes were sent")
        outputs.append(ApiError(422, f"cannot read the image: {result.reason}") if isinstance(result, ImageLoadError)
                       else result)
    return outputs


def _top_k(output: ModelOutputs, k: int, service: ModelService) -> list[dict[str, Any]]:
    top = output.logits.softmax(dim=-1).topk(k)
    return [{"index": index, "label": service.class_names[index], "probability": probability}
            for probability, index in zip(top.values.tolist(), top.indices.tolist())]


def _top_k_parameter(request: Request, service: ModelService) -> int:
    if service.class_names is None:
        raise ApiError(409, "this model's outputs have no class names (start the server with --labels FILE); "
                            "its embeddings are at /v1/embed")
    text = request.query_params.get("top_k", str(DEFAULT_TOP_K))
    if not text.isdecimal() or not 1 <= int(text) <= service.num_classes:
        raise ApiError(400, f"top_k must be a whole number from 1 to {service.num_classes}, got {text!r}")
    return int(text)


def _flag_parameter(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise ApiError(400, f"{name} must be true or false, got {text!r}")
    return text in ("true", "1")


# ----------------------------------------------------------------------------------------------
# Errors as JSON
# ----------------------------------------------------------------------------------------------


async def _api_error(request: Request, error: ApiError) -> Response:
    return error_response(error.status, error.reason, error.headers)


async def _http_error(request: Request, error: HTTPException) -> Response:
    if error.status_code == 404:
        reason = f"no such route: {request.method} {request.url.path} (the API is described at /docs)"
    elif error.status_code == 405:
        reason = f"{request.method} is not allowed on {request.url.path}"
    else:
        reason = str(error.detail)
    return error_response(error.status_code, reason, error.headers)


async def _client_gone(request: Request, error: ClientDisconnect) -> Response:
    """The client closed the connection before its upload ended: nobody reads the answer."""
    logger.info("%s %s: the client disconnected during the upload", request.method, request.url.path)
    return error_response(400, "the client disconnected during the upload")


async def _internal_error(request: Request, error: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")
