"""The FastAPI application: OpenAI-compatible routes over an `Engine`, with keys, limits, metrics.

`create_app` only assembles: shared state (`state.ServerState`), one router per endpoint family
(`routes.models`, `routes.generation`, `routes.files`, `routes.health`), API keys and rate limits
as dependencies (`deps`), and one ASGI middleware that caps declared body sizes and counts
requests. Every route but /health needs `Authorization: Bearer KEY` when keys are configured.
Errors are answered in OpenAI's {"error": {...}} shape: 400 for bad requests (schema and type
errors included, as OpenAI does), 401 (with WWW-Authenticate), 404, 405 (with Allow), 409, 413,
429 (with Retry-After), 500 (JSON, never a plain-text page).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from auroragpt.log import get_logger
from auroragpt.serve import protocol
from auroragpt.serve.auth import KeyChecker
from auroragpt.serve.batches import BatchStore
from auroragpt.serve.metrics import Metrics
from auroragpt.serve.protocol import APIError, Limits
from auroragpt.serve.ratelimit import RateLimiter
from auroragpt.serve.routes import files, generation, health, models
from auroragpt.serve.state import ServerSettings, ServerState
from auroragpt.serve.streaming import batch_runner

if TYPE_CHECKING:  # the engine brings torch; the gateway uses this module without it
    from auroragpt.serve.engine import Engine

__all__ = ["ServerSettings", "add_error_handlers", "create_app"]

log = get_logger(__name__)


def _json_error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class CapAndCount:
    """ASGI middleware: refuse a declared Content-Length over the cap (413) before reading it, and
    count every answered request by route template and status."""

    def __init__(self, app, settings: ServerSettings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        limit = self.settings.max_file_bytes if scope["path"] == "/v1/files" else self.settings.max_body_bytes
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        try:
            if length.isdigit() and int(length) > limit:
                err = APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
                await _json_error(err)(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(getattr(route, "path", "unmatched"), str(status[0])).inc()


def create_app(engine: Engine, tokenizer, settings: ServerSettings, keys: KeyChecker | None = None,
               limiter: RateLimiter | None = None, chat_template: str | None = None) -> FastAPI:
    """Build the ASGI app. The engine thread starts with the app and stops with it."""
    metrics = Metrics(engine)
    state = ServerState(
        engine=engine, tokenizer=tokenizer, settings=settings, keys=keys or KeyChecker([]),
        limiter=limiter or RateLimiter(), metrics=metrics,
        limits=Limits(settings.max_tokens_cap, engine.max_seq_len, settings.model_name),
        render_chat=protocol.chat_renderer(chat_template, **protocol.special_tokens(tokenizer)),
    )
    own_state_dir = settings.state_dir is None  # a temporary one, removed at shutdown
    state_dir = settings.state_dir or tempfile.mkdtemp(prefix="auroragpt-serve-")
    state.store = BatchStore(state_dir, batch_runner(state), concurrency=engine.max_batch)

    @asynccontextmanager
    async def lifespan(_app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            if own_state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)

    app = FastAPI(title="auroragpt", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server, app.state.engine, app.state.store = state, engine, state.store
    for router in (health.router, models.router, generation.router, files.router):
        app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(CapAndCount, settings=settings, metrics=metrics)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's {"error": {...}} shape (shared with the gateway)."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)


async def _api_error(_request: Request, err: APIError) -> JSONResponse:
    return _json_error(err)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's Allow names only the first route's)."""
    def served(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return ", ".join(m for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if served(m))


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Routing errors (404, 405) in OpenAI's shape, keeping their headers; a 405 lists in Allow
    what the path does accept."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    headers = dict(err.headers or {})
    if err.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return JSONResponse(APIError(err.status_code, str(err.detail), code=code).body(), status_code=err.status_code,
                        headers=headers)


async def _server_error(_request: Request, err: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=err)
    return _json_error(APIError(500, f"internal error: {type(err).__name__}", type="server_error"))
