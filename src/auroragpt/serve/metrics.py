"""Prometheus metrics of one server, in a registry of its own (several apps may live in one process)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from auroragpt.serve.events import StreamEvent

if TYPE_CHECKING:  # the engine brings torch; the gateway uses this module without it
    from auroragpt.serve.engine import Engine

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Request counts by route and status, token counts, latencies, queue depth and running rows."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("auroragpt_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("auroragpt_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("auroragpt_generation_tokens", "tokens generated (abandoned requests "
                                         "count what they generated before they were cancelled)", registry=r)
        self.abandoned = Counter("auroragpt_abandoned_requests", "requests cancelled before they finished "
                                 "(the client hung up)", registry=r)
        self.latency = Histogram("auroragpt_request_latency_seconds", "end-to-end latency of generation requests",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("auroragpt_time_to_first_token_seconds", "time to first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("auroragpt_time_per_output_token_seconds", "mean time per output token after the first",
                              buckets=_LATENCY_BUCKETS, registry=r)
        Gauge("auroragpt_queue_depth", "requests waiting for a batch slot", registry=r).set_function(lambda: engine.queue_depth)
        Gauge("auroragpt_running_requests", "requests decoding now", registry=r).set_function(lambda: engine.num_running)
        Gauge("auroragpt_engine_generated_tokens", "tokens the engine generated since it started, for every request "
              "(a cancelled one stops adding)", registry=r).set_function(lambda: engine.tokens_generated)
        Gauge("auroragpt_engine_decode_steps", "decode steps the engine ran since it started: with the generated "
              "tokens, the mean rows per step (batch occupancy)", registry=r).set_function(lambda: engine.steps)

    def finished(self, route: str, start: float, first: float | None, last: StreamEvent) -> None:
        """Record a generation request that ran to its end."""
        now = time.perf_counter()
        self.latency.labels(route).observe(now - start)
        self.prompt_tokens.inc(last.prompt_tokens)
        self.generation_tokens.inc(last.completion_tokens)
        if first is not None:
            self.ttft.observe(first - start)
            if last.completion_tokens > 1:
                self.tpot.observe((now - first) / (last.completion_tokens - 1))

    def abandoned_request(self, completion_tokens: int) -> None:
        self.abandoned.inc()
        self.generation_tokens.inc(completion_tokens)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
