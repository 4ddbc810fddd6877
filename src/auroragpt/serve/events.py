"""The engine's unit of output, shared by the engine, the protocol and streaming without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamEvent:
    """New text (and the token ids behind it) for one request; the last one has finished=True."""

    text: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
