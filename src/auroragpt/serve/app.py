"""The FastAPI application: OpenAI-compatible routes over an `Engine`, with keys, limits, metrics.

Every route but /health needs `Authorization: Bearer KEY` when keys are configured. Generation
routes are charged to the key's rate limits before they reach the engine; errors are answered in
OpenAI's {"error": {...}} shape (400 for bad requests, 422 for schema errors, 401, 404, 413, 429).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from auroragpt.log import get_logger
from auroragpt.serve import protocol
from auroragpt.serve.auth import KeyChecker, bearer_token
from auroragpt.serve.batches import BatchStore, parse_multipart
from auroragpt.serve.engine import Engine, StreamEvent
from auroragpt.serve.protocol import APIError, Limits, Prepared
from auroragpt.serve.ratelimit import RateLimiter

log = get_logger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class ServerSettings:
    """Caps and names the server is started with (the CLI fills these from its flags)."""

    model_name: str
    max_tokens_cap: int = 1024
    max_body_bytes: int = 1 << 20
    max_file_bytes: int = 64 << 20
    state_dir: str | None = None


class _Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one process)."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("auroragpt_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("auroragpt_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("auroragpt_generation_tokens", "tokens generated", registry=r)
        self.abandoned = Counter("auroragpt_abandoned_requests", "requests cancelled before they finished "
                                 "(the client hung up)", registry=r)
        self.latency = Histogram("auroragpt_request_latency_seconds", "end-to-end latency of generation requests",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("auroragpt_time_to_first_token_seconds", "time to first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("auroragpt_time_per_output_token_seconds", "mean time per output token after the first",
                              buckets=_LATENCY_BUCKETS, registry=r)
        Gauge("auroragpt_queue_depth", "requests waiting for a batch slot", registry=r).set_function(lambda: engine.queue_depth)
        Gauge("auroragpt_running_requests", "requests decoding now", registry=r).set_function(lambda: engine.num_running)


def create_app(engine: Engine, tokenizer, settings: ServerSettings, keys: KeyChecker | None = None,
               limiter: RateLimiter | None = None, chat_template: str | None = None):
    """Build the ASGI app. The engine thread starts with the app and stops with it."""
    keys = keys or KeyChecker([])
    limiter = limiter or RateLimiter()
    metrics = _Metrics(engine)
    limits = Limits(settings.max_tokens_cap, engine.max_seq_len, settings.model_name)
    render_chat = protocol.chat_renderer(chat_template, **protocol.special_tokens(tokenizer))
    own_state_dir = settings.state_dir is None  # a temporary one, removed at shutdown
    state_dir = settings.state_dir or tempfile.mkdtemp(prefix="auroragpt-serve-")

    async def events_of(prepared: Prepared) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent] = asyncio.Queue()
        try:
            handle = engine.submit(prepared.prompt_ids, prepared.params, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        except ValueError as err:
            raise APIError(400, str(err)) from None
        finished = False
        try:
            while True:
                event = await events.get()
                finished = event.finished
                if event.error:
                    raise APIError(500, f"generation failed: {event.error}", type="server_error")
                yield event
                if event.finished:
                    return
        finally:
            if not finished:
                handle.cancel()
                metrics.abandoned.inc()

    def record(route: str, start: float, first: float | None, last: StreamEvent) -> None:
        now = time.perf_counter()
        metrics.latency.labels(route).observe(now - start)
        metrics.prompt_tokens.inc(last.prompt_tokens)
        metrics.generation_tokens.inc(last.completion_tokens)
        if first is not None:
            metrics.ttft.observe(first - start)
            if last.completion_tokens > 1:
                metrics.tpot.observe((now - first) / (last.completion_tokens - 1))

    async def collect(prepared: Prepared, route: str) -> dict:
        start, first, texts, last = time.perf_counter(), None, [], None
        async for event in events_of(prepared):
            if first is None and event.token_ids:
                first = time.perf_counter()
            texts.append(event.text)
            last = event
        record(route, start, first, last)
        return protocol.full_response(prepared, protocol.new_id(prepared.kind), settings.model_name, "".join(texts), last)

    async def sse(prepared: Prepared, route: str, events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
        rid, model = protocol.new_id(prepared.kind), settings.model_name
        start, first, last = time.perf_counter(), None, None
        sent_first = False
        try:
            async for event in events:
                if first is None and event.token_ids:
                    first = time.perf_counter()
                last = event
                if event.text or event.finished or (prepared.kind == "chat" and not sent_first):
                    chunk = protocol.stream_chunk(prepared, rid, model, event.text, event.finish_reason, first=not sent_first)
                    sent_first = True
                    yield f"data: {json.dumps(chunk)}\n\n"
            if prepared.include_usage and last is not None:
                yield f"data: {json.dumps(protocol.usage_chunk(prepared, rid, model, last))}\n\n"
        except APIError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"
        if last is not None:
            record(route, start, first, last)

    def authenticate(request: Request) -> str:
        """The caller's key id ("anonymous" when the server runs without keys)."""
        if not keys.enabled:
            return "anonymous"
        token = bearer_token(request.headers.get("authorization"))
        key_id = keys.identify(token) if token else None
        if key_id is None:
            raise APIError(401, "missing or invalid API key; send it as 'Authorization: Bearer KEY'",
                           type="invalid_request_error", code="invalid_api_key")
        return key_id

    def charge(key_id: str, tokens: int) -> None:
        if limiter.too_large(tokens):
            raise APIError(400, f"this request needs {tokens} tokens (prompt + max_tokens), more than the "
                           f"{int(limiter.tokens_per_min)} tokens/min allowed per key", param="max_tokens")
        retry = limiter.acquire(key_id, tokens)
        if retry:
            raise APIError(429, f"rate limit exceeded for this API key; retry after {retry} s",
                           type="rate_limit_exceeded", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})

    async def read_capped(request: Request, limit: int) -> bytes:
        """The body, read as it arrives and refused once past `limit` (a chunked upload has no
        Content-Length for the middleware to check, and must not fill memory first)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(request: Request):
        raw = await read_capped(request, settings.max_body_bytes)
        try:
            return json.loads(raw)
        except ValueError as err:
            raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None

    async def run_one(endpoint: str, body: dict, key_id: str) -> tuple[int, dict]:
        """One batch line: same checks as a live request; waits for the key's budget instead of 429."""
        route = "chat" if endpoint.endswith("chat/completions") else "completion"
        try:
            prepared = protocol.prepare(route, {**body, "stream": False}, tokenizer, render_chat, limits)
            tokens = len(prepared.prompt_ids) + prepared.params.max_tokens
            if limiter.too_large(tokens):
                raise APIError(400, f"this request needs {tokens} tokens, more than the per-key minute allowance")
            while (retry := limiter.acquire(key_id, tokens)):
                await asyncio.sleep(min(retry, 5))
            return 200, await collect(prepared, endpoint)
        except APIError as err:
            return err.status, err.body()

    store = BatchStore(state_dir, run_one, concurrency=engine.max_batch)

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
    app.state.engine, app.state.store = engine, store

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException):
        return JSONResponse(APIError(err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None).body(),
                            status_code=err.status_code)

    @app.middleware("http")
    async def count_and_cap(request: Request, call_next):
        limit = settings.max_file_bytes if request.url.path == "/v1/files" else settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse(APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large").body(), status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, "running": engine.num_running, "waiting": engine.queue_depth}

    @app.get("/metrics")
    async def prometheus(request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        authenticate(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        authenticate(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "auroragpt", "max_model_len": engine.max_seq_len}]}

    async def generation(request: Request, kind: str):
        key_id = authenticate(request)
        prepared = protocol.prepare(kind, await read_json(request), tokenizer, render_chat, limits)
        charge(key_id, len(prepared.prompt_ids) + prepared.params.max_tokens)
        route = request.url.path
        if not prepared.stream:
            return await collect(prepared, route)
        events = events_of(prepared)
        first = await events.__anext__()  # errors before the first token still get a status code

        async def chained():
            yield first
            if not first.finished:
                async for event in events:
                    yield event

        return StreamingResponse(sse(prepared, route, chained()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generation(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generation(request, "chat")

    @app.post("/v1/files")
    async def upload_file(request: Request):
        key_id = authenticate(request)
        fields = parse_multipart(request.headers.get("content-type", ""), await read_capped(request, settings.max_file_bytes))
        if "file" not in fields:
            raise APIError(400, "the form has no 'file' field", param="file")
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", errors="replace")
        if purpose != "batch":
            raise APIError(400, "only purpose='batch' is supported", param="purpose")
        filename, data = fields["file"]
        return store.add_file(data, filename or "upload.jsonl", purpose, key_id)

    @app.get("/v1/files/{file_id}")
    async def file_info(file_id: str, request: Request):
        return store.get_file(file_id, authenticate(request))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request):
        return Response(store.file_content(file_id, authenticate(request)), media_type="application/jsonl")

    @app.post("/v1/batches")
    async def create_batch(request: Request):
        key_id = authenticate(request)
        return store.create_batch(await read_json(request), key_id)

    @app.get("/v1/batches")
    async def list_batches(request: Request):
        data = store.list_batches(authenticate(request))
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": False}

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request):
        return store.get_batch(batch_id, authenticate(request))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request):
        return store.cancel_batch(batch_id, authenticate(request))

    return app
