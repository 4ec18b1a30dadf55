"""``fastvit serve``: an HTTP service that classifies and embeds uploaded images, with dynamic batching
and a web page (``pip install 'fastvit[serve]'``).

Modules, from the request inward: :mod:`.server` (socket, uvicorn, worker processes, SIGTERM),
:mod:`.gatekeeper` (API key, request metrics), :mod:`.app` (routes, JSON errors), :mod:`.uploads`
(bodies and multipart forms under a size limit), :mod:`.batcher` (decoding pool, bounded queue,
batches on warmed sizes), :mod:`.service` (the model), :mod:`.metrics` (Prometheus text),
:mod:`.openapi`, ``static/`` (the page).
"""

from ..runtime.export import OptionalDependencyError

try:
    import python_multipart  # noqa: F401 (imported to check the extra is installed)
    import starlette  # noqa: F401 (imported to check the extra is installed)
    import uvicorn  # noqa: F401 (imported to check the extra is installed)
except ImportError as error:
    raise OptionalDependencyError(
        f"fastvit serve needs {error.name}: install the serve extra: pip install 'fastvit[serve]'"
    ) from error

from .app import create_app
from .server import serve
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]
