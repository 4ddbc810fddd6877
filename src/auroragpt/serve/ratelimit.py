"""Per-key rate limits: requests per second and tokens per minute, as token buckets.

A request is charged one request and its token budget (prompt tokens + max_tokens) when admitted;
when a bucket is short, the caller answers 429 with Retry-After set to the seconds until it refills
enough. Buckets start full, so short bursts up to the limit pass.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    capacity: float
    per_second: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.per_second)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.per_second


class RateLimiter:
    """requests_per_s and tokens_per_min of 0 (or None) switch that limit off."""

    def __init__(self, requests_per_s: float | None = None, tokens_per_min: float | None = None, clock=time.monotonic) -> None:
        self.requests_per_s = requests_per_s or 0.0
        self.tokens_per_min = tokens_per_min or 0.0
        self._clock = clock
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.requests_per_s or self.tokens_per_min)

    def _buckets_of(self, key: str, now: float) -> tuple[_Bucket | None, _Bucket | None]:
        if key not in self._buckets:
            req = _Bucket(max(1.0, self.requests_per_s), self.requests_per_s, max(1.0, self.requests_per_s), now) if self.requests_per_s else None
            tok = _Bucket(self.tokens_per_min, self.tokens_per_min / 60.0, self.tokens_per_min, now) if self.tokens_per_min else None
            self._buckets[key] = (req, tok)
        return self._buckets[key]

    def too_large(self, tokens: int) -> bool:
        """A request whose token budget can never fit in a minute's allowance."""
        return bool(self.tokens_per_min) and tokens > self.tokens_per_min

    def acquire(self, key: str, tokens: int) -> int:
        """Charge one request of `tokens` tokens to `key`; return 0, or the Retry-After seconds
        (at least 1) when the key is over a limit (nothing is charged then)."""
        if not self.enabled:
            return 0
        with self._lock:
            now = self._clock()
            req, tok = self._buckets_of(key, now)
            wait = 0.0
            for bucket, amount in ((req, 1.0), (tok, float(tokens))):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_for(amount))
            if wait > 0:
                return max(1, math.ceil(wait))
            if req is not None:
                req.level -= 1.0
            if tok is not None:
                tok.level -= tokens
            return 0
