"""Forwarding one generation request to a replica, whole or streamed, with usage accounting.

A backend that breaks off (connection refused or reset, a stream cut short) fails that request
alone: 502 before the first byte, an SSE error event after it; the pool replaces the backend.
Streams ask the backend for a usage chunk (to account tokens per key) and drop it again when
the caller did not ask for one.
"""

from __future__ import annotations

import json
from typing import AsyncIterator, Callable

import httpx
from fastapi.responses import Response, StreamingResponse

from auroragpt.gateway.pool import Pool, Replica
from auroragpt.serve.protocol import APIError

Account = Callable[[int, int], None]


def _backend_error(replica: Replica, err: Exception) -> APIError:
    return APIError(502, f"the backend of model {replica.job.model} (job {replica.job.id}) failed during the request: "
                    f"{type(err).__name__}; it is being replaced, retry the request", type="server_error",
                    code="backend_failed")


def _usage_of(payload: dict) -> tuple[int, int]:
    usage = payload.get("usage") or {}
    return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


async def forward(pool: Pool, replica: Replica, path: str, body: dict, raw: bytes, account: Account) -> Response:
    """Send the request (`raw`, as the caller sent it, unless a usage chunk must be asked for) to the
    replica and answer with what it answers."""
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if stream and not wants_usage:
        raw = json.dumps({**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}).encode()
    request = pool.http.build_request("POST", replica.base + path, content=raw,
                                      headers={"Authorization": f"Bearer {replica.key}",
                                               "Content-Type": "application/json"})
    replica.outstanding += 1
    try:
        upstream = await pool.http.send(request, stream=stream)
    except httpx.HTTPError as err:
        replica.outstanding -= 1
        await pool.replica_failed(replica)
        raise _backend_error(replica, err) from None
    if not stream or upstream.status_code != 200:
        try:
            content = await upstream.aread()
        except httpx.HTTPError as err:
            replica.outstanding -= 1
            await pool.replica_failed(replica)
            raise _backend_error(replica, err) from None
        finally:
            await upstream.aclose()
        replica.outstanding -= 1
        if upstream.status_code == 200:
            account(*_usage_of(json.loads(content)))
        return Response(content, status_code=upstream.status_code, media_type="application/json",
                        headers={k: v for k, v in upstream.headers.items() if k.lower() == "retry-after"})
    return StreamingResponse(_relay(pool, replica, upstream, wants_usage, account), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _relay(pool: Pool, replica: Replica, upstream: httpx.Response, wants_usage: bool,
                 account: Account) -> AsyncIterator[bytes]:
    """The backend's SSE lines, minus an unasked-for usage chunk; an error event if it breaks off."""
    skip_blank = finished = False
    try:
        async for line in upstream.aiter_lines():
            if line.startswith("data: ") and '"usage"' in line and '"choices":[]' in line.replace(" ", ""):
                account(*_usage_of(json.loads(line[6:])))
                if not wants_usage:
                    skip_blank = True
                    continue
            if line == "data: [DONE]":
                finished = True
            if not line and skip_blank:
                skip_blank = False
                continue
            yield (line + "\n").encode()
        if not finished:
            raise httpx.RemoteProtocolError("the stream ended without [DONE]")
    except (httpx.HTTPError, ValueError) as err:
        await pool.replica_failed(replica)
        yield f"data: {json.dumps(_backend_error(replica, err).body())}\n\n".encode()
    finally:
        replica.outstanding -= 1
        await upstream.aclose()
