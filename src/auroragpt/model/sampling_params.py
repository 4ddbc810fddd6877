"""What a request asks of the sampler, checked without torch (the gateway validates requests
and never samples)."""

from __future__ import annotations

from dataclasses import dataclass

# torch.Generator.manual_seed accepts exactly this range; outside it torch raises an overflow error.
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # keep going past end of document (benchmarks want exact lengths)

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not self.temperature >= 0:
            raise ValueError("temperature must be >= 0")
        if not self.temperature <= 2:
            raise ValueError("temperature must be <= 2")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}]")
