"""What every route of one server shares: the engine, tokenizer, keys, limits, metrics and batch store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fastapi import Request

from auroragpt.serve.auth import KeyChecker
from auroragpt.serve.batches import BatchStore
from auroragpt.serve.metrics import Metrics
from auroragpt.serve.protocol import Limits
from auroragpt.serve.ratelimit import RateLimiter

if TYPE_CHECKING:  # the engine brings torch; the gateway uses this module without it
    from auroragpt.serve.engine import Engine


@dataclass
class ServerSettings:
    """Caps and names the server is started with (the CLI fills these from its flags)."""

    model_name: str
    max_tokens_cap: int = 1024
    max_body_bytes: int = 1 << 20
    max_file_bytes: int = 64 << 20
    state_dir: str | None = None


@dataclass
class ServerState:
    engine: Engine
    tokenizer: Any
    settings: ServerSettings
    keys: KeyChecker
    limiter: RateLimiter
    metrics: Metrics
    limits: Limits
    render_chat: Callable[[list[dict]], str]
    store: BatchStore | None = None  # set once the batch runner, which needs the state, exists


async def server_state(request: Request) -> ServerState:
    """FastAPI dependency: this app's state."""
    return request.app.state.server
