"""The OpenAPI 3.1 description of the API, served at ``/openapi.json`` and rendered at ``/docs``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERRORS = {
    400: "Bad request: empty upload, a form without a file, or a bad query parameter.",
    401: "Missing or wrong API key (when the server has one).",
    408: "The upload did not arrive within the server's upload timeout.",
    409: "The model cannot answer this: no class names, or no head to project with.",
    413: "The upload is over the server's size limit (checked while it arrives).",
    415: "Unsupported media type: send image/*, application/octet-stream or multipart/form-data.",
    422: "The upload is not an image that can be read: not an image, truncated, or a decompression bomb.",
    503: "Busy (the queue is full) or still warming up; see the Retry-After header.",
    504: "Not answered within the server's timeout.",
}
_BINARY = {"type": "string", "format": "binary"}
_IMAGE_BODY = {
    "required": True,
    "description": "One image: its bytes as the body, or one file in a multipart form.",
    "content": {
        "image/*": {"schema": _BINARY},
        "application/octet-stream": {"schema": _BINARY},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": _BINARY}}},
    },
}
_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["status", "reason"], "properties": {
        "status": {"type": "integer"}, "error": {"type": "string"}, "reason": {"type": "string"}}},
    "ClassScore": {"type": "object", "properties": {
        "index": {"type": "integer"}, "label": {"type": "string"}, "probability": {"type": "number"}}},
    "Prediction": {"type": "object", "properties": {
        "model": {"type": "string"}, "top_k": {"type": "array", "items": {"$ref": "#/components/schemas/ClassScore"}}}},
    "BatchPrediction": {"type": "object", "properties": {
        "model": {"type": "string"},
        "results": {"type": "array", "items": {"type": "object", "properties": {
            "filename": {"type": ["string", "null"]}, "status": {"type": "integer"},
            "top_k": {"type": "array", "items": {"$ref": "#/components/schemas/ClassScore"}},
            "reason": {"type": "string"}}}}}},
    "Embedding": {"type": "object", "properties": {
        "model": {"type": "string"}, "size": {"type": "integer"}, "norm": {"type": "number"},
        "normalized": {"type": "boolean"}, "projected": {"type": "boolean"},
        "embedding": {"type": "array", "items": {"type": "number"}}}},
}


def openapi_document(api_key: bool) -> dict[str, Any]:
    """The API's description; with ``api_key``, every operation but ``/healthz`` requires the key."""
    top_k = _query("top_k", "integer", "How many classes (default 5).")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "fastvit serve", "version": "1",
                 "description": "Classify and embed images with a FastViT model. Images are uploaded, never "
                                "fetched from a URL."},
        "paths": {
            "/v1/predict": {"post": _operation(
                "Top-k classes of one image", _json("Prediction"), [top_k], _IMAGE_BODY,
                errors=(400, 408, 409, 413, 415, 422, 503, 504))},
            "/v1/predict/batch": {"post": _operation(
                "Top-k classes of each image of a multipart form; unreadable images get their own status and reason",
                _json("BatchPrediction"), [top_k],
                {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "array", "items": _BINARY}}}}}},
                errors=(400, 408, 409, 413, 415, 503, 504))},
            "/v1/embed": {"post": _operation(
                "The pooled embedding of one image: JSON, or little-endian float32 bytes with "
                "Accept: application/octet-stream",
                {"description": "The embedding.", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Embedding"}},
                    "application/octet-stream": {"schema": _BINARY}}},
                [_query("normalize", "boolean", "Scale to unit L2 length."),
                 _query("projected", "boolean", "The model's own output (a MobileCLIP tower's CLIP embedding).")],
                _IMAGE_BODY, errors=(400, 408, 409, 413, 415, 422, 503, 504))},
            "/v1/models": {"get": _operation("The model served: name, tag, classes, input size, precision, backend",
                                             _json(None), errors=(503,))},
            "/healthz": {"get": _operation("Liveness: the process answers", _json(None), open=True)},
            "/readyz": {"get": _operation("Readiness: the model is loaded and warmed up", _json(None), errors=(503,))},
            "/metrics": {"get": _operation("Prometheus metrics (text format)", {
                "description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}})},
        },
        "components": {"schemas": _SCHEMAS},
    }
    if api_key:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "basic": {"type": "http", "scheme": "basic", "description": "The key as the password."},
        }
        document["security"] = [{"bearer": []}, {"header": []}, {"basic": []}]
    return document


def _operation(summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None, errors: tuple[int, ...] = (), open: bool = False) -> dict[str, Any]:
    """An operation's description; an ``open`` one needs no API key (and so never answers 401)."""
    responses = {"200": ok} | ({} if open else {"401": _error(401)}) | {str(status): _error(status) for status in errors}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if open:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    return operation


def _json(schema: str | None) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "object"}
    return {"description": "Success.", "content": {"application/json": {"schema": reference}}}


def _error(status: int) -> dict[str, Any]:
    return {"description": _ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": kind}}
