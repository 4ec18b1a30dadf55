"""Errors the API answers with: a status and a one-line reason, sent as JSON, never a traceback."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


class ApiError(Exception):
    """A request the server refuses: ``status`` with ``reason`` (and extra response ``headers``)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"status": 413, "error": "Request Entity Too Large", "reason": "..."}``."""
    body = {"status": status, "error": HTTPStatus(status).phrase, "reason": reason}
    return JSONResponse(body, status_code=status, headers=headers)
