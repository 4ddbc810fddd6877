"""Picking the next token from logits: greedy, or temperature with top-k and top-p filters.

The one sampler of the package: `model.generate` and the serving engine both call `sample_next`.
It must be safe for every value a request may carry (temperature anywhere in (0, 2], top_p
anywhere in (0, 1]): scores are shifted so the best is 0 before dividing by the temperature and
computed in float64 on the CPU, so a tiny temperature pushes the others to -inf (greedy-equivalent)
instead of turning the best into inf and everything into NaN, and the best token always survives
the top-p cut however small top_p is.
"""

from __future__ import annotations

import torch



class SamplingError(ValueError):
    """The logits cannot be sampled from (NaN, +inf, or no finite score in a row)."""


def _checked(logits: torch.Tensor) -> torch.Tensor:
    scores = logits.detach().to(device="cpu", dtype=torch.float64)
    if scores.dim() == 1:
        scores = scores[None]
    if torch.isnan(scores).any() or torch.isposinf(scores).any():
        raise SamplingError("the model produced NaN or infinite logits")
    if torch.isneginf(scores).all(dim=-1).any():
        raise SamplingError("every token has a score of -inf")
    return scores


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row of logits [B, V] (or [V]) as a CPU long tensor [B].

    Argmax when temperature <= 0; otherwise softmax(logits / temperature) restricted to the top_k
    best (0 = all) and to the smallest set whose probability reaches top_p (1 = all). `generator`
    is a CPU generator (seeded requests get reproducible samples).
    """
    scores = _checked(logits)
    if not temperature > 0:
        return scores.argmax(dim=-1)
    scores = (scores - scores.max(dim=-1, keepdim=True).values) / float(temperature)
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best always stays.
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        drop[:, 0] = False
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = scores.softmax(dim=-1)  # the best score is 0, so the sum is >= 1: never NaN
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def seeded_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator for `sample_next` (None: torch's global one)."""
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed)
