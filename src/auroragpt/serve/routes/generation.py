"""POST /v1/completions and /v1/chat/completions, whole or streamed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from auroragpt.serve.deps import charged_chat, charged_completion
from auroragpt.serve.protocol import Prepared
from auroragpt.serve.state import ServerState, server_state
from auroragpt.serve.streaming import collect, events_of, sse

router = APIRouter()


async def _answer(request: Request, state: ServerState, prepared: Prepared):
    route = request.url.path
    if not prepared.stream:
        body = await collect(state, prepared, route, request.receive)
        # None: the client hung up and its request was cancelled; this response reaches nobody.
        return body if body is not None else Response(status_code=499)
    events = events_of(state, prepared)
    first = await events.__anext__()  # errors before the first token still get a status code
    return StreamingResponse(sse(state, prepared, route, first, events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.post("/v1/completions")
async def completions(request: Request, prepared: Prepared = Depends(charged_completion),
                      state: ServerState = Depends(server_state)):
    return await _answer(request, state, prepared)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, prepared: Prepared = Depends(charged_chat),
                           state: ServerState = Depends(server_state)):
    return await _answer(request, state, prepared)
