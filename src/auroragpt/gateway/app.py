"""The gateway's HTTP front: OpenAI-compatible routes over a `Pool` of backend jobs.

Keys, rate limits, body caps, JSON parsing and the error shape are serve's own (`serve.deps`,
`serve.protocol`, `serve.app.add_error_handlers`): the gateway hands serve's dependencies its
state as `app.state.server`. A cold model answers 503 with Retry-After and its state,
or, when the caller sends `X-Wait-For-Model: true` (or `?wait=true`), waits up to start_timeout_s.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from auroragpt.gateway.batches import TERMINAL, GatewayBatches
from auroragpt.gateway.config import GatewayConfig, GatewaySettings
from auroragpt.gateway.pool import Pool
from auroragpt.gateway.proxy import forward
from auroragpt.serve import protocol
from auroragpt.serve.app import add_error_handlers
from auroragpt.serve.auth import KeyChecker
from auroragpt.serve.deps import api_key, charge, read_capped
from auroragpt.serve.protocol import APIError
from auroragpt.serve.ratelimit import RateLimiter
from auroragpt.serve.routes import files as files_routes


class GatewayMetrics:
    """Per-key usage and per-model replica counts, in a registry of the gateway's own."""

    def __init__(self, pool: Pool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = r = CollectorRegistry()
        self.requests = Counter("auroragpt_gateway_requests", "proxied requests by key, model and status",
                                ["key", "model", "status"], registry=r)
        self.prompt_tokens = Counter("auroragpt_gateway_prompt_tokens", "prompt tokens by key", ["key"], registry=r)
        self.completion_tokens = Counter("auroragpt_gateway_completion_tokens", "completion tokens by key", ["key"], registry=r)
        replicas = Gauge("auroragpt_gateway_replicas", "running replicas by model", ["model"], registry=r)
        for model in pool.cfg.models:
            replicas.labels(model).set_function(lambda m=model: sum(1 for x in pool.replicas.values() if x.job.model == m))
        Gauge("auroragpt_gateway_jobs", "jobs the gateway owns", registry=r).set_function(lambda: len(pool.registry.jobs))
        Gauge("auroragpt_gateway_submits", "jobs submitted", registry=r).set_function(lambda: pool.registry.submits)


@dataclass
class GatewayState:
    """What serve's dependencies read (keys, limiter, settings.max_body_bytes) plus the pool."""

    settings: GatewaySettings
    keys: KeyChecker
    limiter: RateLimiter
    pool: Pool
    metrics: GatewayMetrics
    store: GatewayBatches | None = None  # serve's files/batches routes read `state.store`


async def _state(request: Request) -> GatewayState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request
    return request.app.state.gateway


router = APIRouter()


@router.get("/health")
async def health(state: GatewayState = Depends(_state)) -> dict:
    return {"status": "ok", "models": {m: state.pool.model_state(m)["state"] for m in state.pool.cfg.models}}


@router.get("/v1/models", dependencies=[Depends(api_key)])
async def models(state: GatewayState = Depends(_state)) -> dict:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "auroragpt-gateway", **state.pool.model_state(m)}
            for m in state.pool.cfg.models]
    return {"object": "list", "data": data}


@router.get("/v1/jobs", dependencies=[Depends(api_key)])
async def jobs(state: GatewayState = Depends(_state)) -> dict:
    batch_jobs = [{**job.to_dict(), "batch": bid} for bid, job in state.store.jobs.items()
                  if state.store.batches[bid]["status"] not in TERMINAL]
    return {"object": "list", "data": [j.to_dict() for j in state.pool.registry.jobs.values()] + batch_jobs}


@router.get("/metrics", dependencies=[Depends(api_key)])
async def metrics(state: GatewayState = Depends(_state)) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _wants_wait(request: Request) -> bool:
    value = request.headers.get("x-wait-for-model") or request.query_params.get("wait") or ""
    return value.lower() in ("1", "true", "yes")


async def _generate(request: Request, kind: str, key_id: str, state: GatewayState) -> Response:
    raw = await read_capped(request, state.settings.max_body_bytes)
    # a small body is decoded in place: a hop to the thread pool costs more than the decoding
    body = protocol.parse_json(raw) if len(raw) < 65536 else await run_in_threadpool(protocol.parse_json, raw)
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        req = (protocol.CompletionRequest if kind == "completion" else protocol.ChatRequest).model_validate(body)
    except ValidationError as err:
        raise protocol.validation_error(err) from None
    pool = state.pool
    name = req.model or (next(iter(pool.cfg.models)) if len(pool.cfg.models) == 1 else None)
    if name not in pool.cfg.models:
        raise APIError(404, f"model {req.model!r} is not served here; GET /v1/models lists the models",
                       param="model", code="model_not_found")
    charge(state, key_id, getattr(req, "max_tokens", None) or 16)  # the gateway has no tokenizer: budget only
    pool.touch(name)
    replica = pool.pick(name)
    if replica is None:
        await pool.ensure(name)
        if _wants_wait(request):
            replica = await pool.wait_running(name, state.settings.start_timeout_s)
    if replica is None:
        model_state = pool.model_state(name)
        retry = max(1, math.ceil(state.settings.poll_interval_s * 2))
        refused = "" if model_state["jobs"] else "".join(f"; site {s}: {why}" for s, why in model_state.get("site_errors", {}).items())
        err = APIError(503, f"model {name} is {model_state['state']} (jobs: {', '.join(model_state['jobs']) or 'none'}{refused}); "
                       f"retry after {retry} s, or send 'X-Wait-For-Model: true' to wait for it",
                       type="server_error", code="model_not_ready")
        content = err.body()
        content["error"]["model_state"] = model_state
        state.metrics.requests.labels(key_id[:12], name, "503").inc()
        return JSONResponse(content, status_code=503, headers={"Retry-After": str(retry)})
    label = key_id[:12]

    def account(prompt_tokens: int, completion_tokens: int) -> None:
        _account(state, key_id, prompt_tokens, completion_tokens)

    try:
        response = await forward(pool, replica, request.url.path, body, raw, account)
    except APIError as err:
        state.metrics.requests.labels(label, name, str(err.status)).inc()
        raise
    pool.touch(name)
    state.metrics.requests.labels(label, name, str(response.status_code)).inc()
    return response


def _account(state: GatewayState, key_id: str, prompt_tokens: int, completion_tokens: int) -> None:
    """One answered request (live, or one line of a batch) in the key's usage and metrics."""
    state.pool.registry.account(key_id, prompt_tokens, completion_tokens)
    state.metrics.prompt_tokens.labels(key_id[:12]).inc(prompt_tokens)
    state.metrics.completion_tokens.labels(key_id[:12]).inc(completion_tokens)


def _account_batch(state: GatewayState, key_id: str, usages: list[tuple[int, int]]) -> None:
    """A finished batch's answered lines, saved before the batch is marked completed."""
    for prompt_tokens, completion_tokens in usages:
        _account(state, key_id, prompt_tokens, completion_tokens)
    state.pool.registry.save()


@router.post("/v1/completions")
async def completions(request: Request, key_id: str = Depends(api_key), state: GatewayState = Depends(_state)):
    return await _generate(request, "completion", key_id, state)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, key_id: str = Depends(api_key), state: GatewayState = Depends(_state)):
    return await _generate(request, "chat", key_id, state)


def create_gateway_app(cfg: GatewayConfig, keys: KeyChecker | None = None) -> FastAPI:
    """Build the gateway's ASGI app; polling starts and stops with the app (jobs outlive it)."""
    pool = Pool(cfg)
    g = cfg.gateway
    state = GatewayState(g, keys or KeyChecker([]), RateLimiter(g.rate_limit_rps, g.rate_limit_tpm), pool,
                         GatewayMetrics(pool))
    state.store = GatewayBatches(cfg, pool.schedulers, lambda key, usages: _account_batch(state, key, usages),
                                 lambda site: sum(1 for j in pool.registry.jobs.values() if j.site == site))

    @asynccontextmanager
    async def lifespan(_app):
        await pool.start()
        await state.store.start()
        try:
            yield
        finally:
            await state.store.stop()
            await pool.stop()

    app = FastAPI(title="auroragpt-gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.gateway = state
    # serve's dependencies read their state from app.state.server: the gateway's keys, limiter and body cap.
    # (Not dependency_overrides: FastAPI rebuilds an overridden dependency's signature on every request.)
    app.state.server = state
    app.include_router(router)
    app.include_router(files_routes.router)  # /v1/files and /v1/batches: serve's routes over GatewayBatches
    add_error_handlers(app)
    return app
