"""Helpers for the serving tests that build apps in-process (a module of its own: test files import it)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

KEY = "sk-test-main-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app(model, tokenizer, tmp: Path, *, keys: list[str] = (KEY,), limiter=None, max_body_bytes: int = 1 << 20,
             max_batch: int = 4):
    """An in-process app over `model` (tests drive it with TestClient or `serve_in_thread`)."""
    from auroragpt.serve.app import ServerSettings, create_app
    from auroragpt.serve.auth import KeyChecker, hash_key
    from auroragpt.serve.engine import Engine

    engine = Engine(model, tokenizer, max_batch=max_batch)
    settings = ServerSettings(model_name="tiny-test", max_tokens_cap=200, max_body_bytes=max_body_bytes,
                              state_dir=str(tmp / "state"))
    return create_app(engine, tokenizer, settings, KeyChecker([hash_key(k) for k in keys]), limiter)


class ThreadServer:
    """uvicorn serving an in-process app on 127.0.0.1 from a thread: real HTTP, test-controlled app."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the in-thread server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
