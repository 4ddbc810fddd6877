"""Forwarding one generation request to a replica, whole or streamed, with usage accounting.

A backend that breaks off (connection refused or reset, a stream cut short) fails that request
alone: 502 before the first byte, an SSE error event after it; the pool replaces the backend.
Streams ask the backend for a usage chunk (to account tokens per key) and drop it again when
the caller did not ask for one.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable

import aiohttp
from fastapi.responses import Response, StreamingResponse

from auroragpt.gateway.pool import Pool, Replica
from auroragpt.serve.protocol import APIError

Account = Callable[[int, int], None]
# names the backend job that answered, as in GET /v1/jobs: which replica served a slow or odd answer
JOB_HEADER = "X-AuroraGPT-Job"
# what a backend that dies, or a connection cut short, raises
BROKEN = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, ValueError)


def _backend_error(replica: Replica, err: Exception) -> APIError:
    return APIError(502, f"the backend of model {replica.job.model} (job {replica.job.id}) failed during the request: "
                    f"{type(err).__name__}; it is being replaced, retry the request", type="server_error",
                    code="backend_failed")


def _usage_of(payload: dict) -> tuple[int, int]:
    usage = payload.get("usage") or {}
    return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


async def forward(pool: Pool, replica: Replica, path: str, body: dict, raw: bytes, account: Account) -> Response:
    """Send the request (`raw`, as the caller sent it, unless a usage chunk must be asked for) to the
    replica and answer with what it answers; a stream is relayed line by line as it comes."""
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if stream and not wants_usage:
        raw = json.dumps({**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}).encode()
    replica.outstanding += 1
    try:
        upstream = await pool.http.post(replica.base + path, data=raw, headers=replica.headers)
    except BROKEN as err:
        replica.outstanding -= 1
        await pool.replica_failed(replica)
        raise _backend_error(replica, err) from None
    except asyncio.CancelledError:  # the gateway shutting down: the count must not stay raised
        replica.outstanding -= 1
        raise
    if not stream or upstream.status != 200:
        try:
            content = await upstream.read()
        except BROKEN as err:
            replica.outstanding -= 1
            await pool.replica_failed(replica)
            raise _backend_error(replica, err) from None
        except asyncio.CancelledError:
            replica.outstanding -= 1
            raise
        finally:
            upstream.release()
        replica.outstanding -= 1
        if upstream.status == 200:
            account(*_usage_of(json.loads(content)))
        retry = upstream.headers.get("Retry-After")
        headers = {JOB_HEADER: replica.job.id, **({"Retry-After": retry} if retry else {})}
        return Response(content, status_code=upstream.status, media_type="application/json", headers=headers)
    return StreamingResponse(_relay(pool, replica, upstream, wants_usage, account), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", JOB_HEADER: replica.job.id})


async def _relay(pool: Pool, replica: Replica, upstream: aiohttp.ClientResponse, wants_usage: bool,
                 account: Account) -> AsyncIterator[bytes]:
    """The backend's SSE bytes, passed on as they arrive (whole lines), minus an unasked-for usage chunk;
    an error event if the backend breaks off."""
    skip_blank = finished = False
    pending = b""
    try:
        async for chunk in upstream.content.iter_any():
            *lines, pending = (pending + chunk).split(b"\n")
            out = []
            for line in lines:
                if line.startswith(b"data: {") and b'"usage"' in line and b'"choices":[]' in line.replace(b" ", b""):
                    account(*_usage_of(json.loads(line[6:])))
                    if not wants_usage:
                        skip_blank = True
                        continue
                if line.rstrip(b"\r") == b"data: [DONE]":
                    finished = True
                elif skip_blank and not line.strip():
                    skip_blank = False
                    continue
                out.append(line + b"\n")
            if out:
                yield b"".join(out)
        if not finished:
            raise aiohttp.ServerDisconnectedError("the stream ended without [DONE]")
    except BROKEN as err:
        await pool.replica_failed(replica)
        yield f"data: {json.dumps(_backend_error(replica, err).body())}\n\n".encode()
    finally:
        replica.outstanding -= 1
        upstream.release()  # a stream the caller left early is closed, not pooled half read
