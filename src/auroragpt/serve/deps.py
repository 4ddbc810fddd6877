"""FastAPI dependencies shared by the routers: API keys, per-key rate limits and request bodies.

Routes declare what they need (`Depends(api_key)`, `Depends(charged_completion)`), so no route
checks a key or charges a limit by hand. Order matters and is kept by declaration: the key is
checked before the body is read, and the body is tokenized before the key is charged for it.
JSON decoding and tokenization run in a worker thread: a megabyte prompt takes a BPE tokenizer
hundreds of milliseconds, which must not stall the event loop that serves everyone else.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from auroragpt.serve import protocol
from auroragpt.serve.auth import bearer_token
from auroragpt.serve.protocol import APIError, Prepared
from auroragpt.serve.state import ServerState, server_state


async def api_key(request: Request, state: ServerState = Depends(server_state)) -> str:
    """The caller's key id ("anonymous" when the server runs without keys); 401 otherwise."""
    if not state.keys.enabled:
        return "anonymous"
    token = bearer_token(request.headers.get("authorization"))
    key_id = state.keys.identify(token) if token else None
    if key_id is None:
        raise APIError(401, "missing or invalid API key; send it as 'Authorization: Bearer KEY'",
                       code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="auroragpt"'})
    return key_id


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


async def json_body(request: Request, state: ServerState = Depends(server_state)) -> Any:
    """The decoded JSON body (400 when it is not JSON or nests too deep)."""
    raw = await read_capped(request, state.settings.max_body_bytes)
    return await run_in_threadpool(protocol.parse_json, raw)


def charge(state: ServerState, key_id: str, tokens: int) -> None:
    """Take one request and `tokens` tokens from the key's buckets, or answer 400/429."""
    limiter = state.limiter
    if limiter.too_large(tokens):
        raise APIError(400, f"this request needs {tokens} tokens (prompt + max_tokens), more than the "
                       f"{int(limiter.tokens_per_min)} tokens/min allowed per key", param="max_tokens")
    retry = limiter.acquire(key_id, tokens)
    if retry:
        raise APIError(429, f"rate limit exceeded for this API key; retry after {retry} s",
                       type="rate_limit_exceeded", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})


def prepare_raw(state: ServerState, kind: str, raw: bytes) -> Prepared:
    """Decode, validate and tokenize one generation request (blocking: call it off the event loop)."""
    return protocol.prepare(kind, protocol.parse_json(raw), state.tokenizer, state.render_chat, state.limits)


def _charged(kind: str):
    async def dependency(request: Request, key_id: str = Depends(api_key),
                         state: ServerState = Depends(server_state)) -> Prepared:
        raw = await read_capped(request, state.settings.max_body_bytes)
        prepared = await run_in_threadpool(prepare_raw, state, kind, raw)
        charge(state, key_id, len(prepared.prompt_ids) + prepared.params.max_tokens)
        return prepared

    dependency.__name__ = f"charged_{kind}"
    return dependency


charged_completion = _charged("completion")
charged_chat = _charged("chat")
