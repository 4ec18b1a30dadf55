"""What every request passes first: the API key, and the request metrics (route, status, latency)."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .metrics import Metrics

__all__ = ["Gatekeeper"]


class Gatekeeper:
    """ASGI middleware: refuses requests without the API key (401, except on ``open_paths``) and
    counts every request by route and status with its latency.

    The key is accepted as ``Authorization: Bearer KEY``, ``X-API-Key: KEY``, or as the password of
    HTTP basic authentication, which a browser asks for by itself, so the web page works too.
    Metrics label requests with their path when it is one of ``paths``, else ``/static`` or
    ``other``, so that unknown URLs cannot grow the metrics without bound.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, metrics: Metrics, paths: Sequence[str],
                 open_paths: Sequence[str] = ()):
        self.app, self.api_key, self.metrics = app, api_key, metrics
        self.paths, self.open_paths = frozenset(paths), frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal:
                response = error_response(401, refusal, {"WWW-Authenticate": 'Basic realm="fastvit", charset="UTF-8"'})
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(self._route(scope["path"]), status, time.perf_counter() - start)

    def _refusal(self, scope: Scope) -> str | None:
        """Why the request may not pass, or None."""
        if not self.api_key or scope["path"] in self.open_paths:
            return None
        presented = _presented_key(Headers(scope=scope))
        if presented is None:
            return "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        if not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            return "wrong API key"
        return None

    def _route(self, path: str) -> str:
        if path in self.paths:
            return path
        return "/static" if path.startswith("/static/") else "other"


def _presented_key(headers: Headers) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return None
