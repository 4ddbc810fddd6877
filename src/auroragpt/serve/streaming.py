"""From a prepared request to an answer: engine events, whole responses, server-sent events.

A request whose client hangs up is cancelled in the engine, streamed or not: the streamed one
when its response can no longer be sent, the whole-response one by a task that waits for the
ASGI `http.disconnect` message while the engine works.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from auroragpt.serve import protocol
from auroragpt.serve.events import StreamEvent
from auroragpt.serve.protocol import APIError, Prepared
from auroragpt.serve.state import ServerState

Receive = Callable[[], Awaitable[dict]]


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read: nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def events_of(state: ServerState, prepared: Prepared, receive: Receive | None = None) -> AsyncIterator[StreamEvent]:
    """The engine's events for one request; leaving early (or the client leaving) cancels it."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
    try:
        handle = state.engine.submit(prepared.prompt_ids, prepared.params,
                                     lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
    except ValueError as err:
        raise APIError(400, str(err)) from None
    watcher = None
    if receive is not None:
        watcher = asyncio.create_task(_client_gone(receive))
        watcher.add_done_callback(lambda _task: events.put_nowait(None))
    finished = False
    try:
        while True:
            event = await events.get()
            if event is None:  # the client went away
                return
            finished = event.finished
            if event.error:
                raise APIError(500, f"generation failed: {event.error}", type="server_error")
            yield event
            if event.finished:
                return
    finally:
        if watcher is not None:
            watcher.cancel()
        if not finished:
            handle.cancel()
            state.metrics.abandoned_request(handle.completion_tokens)


async def collect(state: ServerState, prepared: Prepared, route: str, receive: Receive | None = None) -> dict | None:
    """The whole answer; None when the client disconnected first (nobody is left to answer)."""
    start, first, texts, last = time.perf_counter(), None, [], None
    async for event in events_of(state, prepared, receive):
        if first is None and event.token_ids:
            first = time.perf_counter()
        texts.append(event.text)
        last = event
    if last is None or not last.finished:
        return None
    state.metrics.finished(route, start, first, last)
    return protocol.full_response(prepared, protocol.new_id(prepared.kind), state.settings.model_name, "".join(texts), last)


async def _chain(first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    yield first
    if not first.finished:
        async for event in rest:
            yield event


async def sse(state: ServerState, prepared: Prepared, route: str, first_event: StreamEvent,
              events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's shape, ending with `data: [DONE]`; `first_event` came from
    `events` already (the route waits for it, so errors before the first token get a status code)."""
    rid, model = protocol.new_id(prepared.kind), state.settings.model_name
    start, first, last = time.perf_counter(), None, None
    sent_first = False
    try:
        async for event in _chain(first_event, events):
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
    finally:
        await events.aclose()  # a client that went away cancels its request now, not at garbage collection
    yield "data: [DONE]\n\n"
    if last is not None and last.finished:
        state.metrics.finished(route, start, first, last)


def batch_runner(state: ServerState):
    """The `RunOne` of the batch store: one batch line through the same checks as a live request,
    waiting for the key's budget instead of answering 429. A line that fails fails alone."""

    async def run_one(endpoint: str, body: dict, key_id: str) -> tuple[int, dict]:
        route = "chat" if endpoint.endswith("chat/completions") else "completion"
        try:
            prepared = await asyncio.to_thread(protocol.prepare, route, {**body, "stream": False}, state.tokenizer,
                                               state.render_chat, state.limits)
            tokens = len(prepared.prompt_ids) + prepared.params.max_tokens
            if state.limiter.too_large(tokens):
                raise APIError(400, f"this request needs {tokens} tokens, more than the per-key minute allowance")
            while (retry := state.limiter.acquire(key_id, tokens)):
                await asyncio.sleep(min(retry, 5))
            return 200, await collect(state, prepared, endpoint)
        except APIError as err:
            return err.status, err.body()
        except Exception as err:  # noqa: BLE001 - a bug in one line must not sink the batch
            return 500, APIError(500, f"{type(err).__name__}: {err}", type="server_error").body()

    return run_one
