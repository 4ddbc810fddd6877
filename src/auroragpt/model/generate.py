"""Text generation for a loaded `GPT`: a fixed batch of prompts, continued token by token.

Each prompt is prefilled into its own slot of a `SlotKVCache` and every decode step feeds one
token per row at that row's own position, so prompts of different lengths share a batch without
padding. Tokens are picked by `sampling.sample_next`. The serving engine uses the same cache and
sampler with continuous batching on top; evaluation, the export checks and post-training call
`generate` (token ids) or `complete` (text).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from auroragpt.errors import ConfigError
from auroragpt.model.kvcache import SlotKVCache
from auroragpt.model.sampling import sample_next, seeded_generator
from auroragpt.model.sampling_params import SEED_MAX, SEED_MIN

__all__ = ["complete", "generate", "sample_next"]


def _check_request(model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int,
                   seed: int | None) -> None:
    if not prompt_ids:
        raise ConfigError("generate: no prompts given")
    if any(len(p) == 0 for p in prompt_ids):
        raise ConfigError("generate: a prompt has no tokens", hint="start empty prompts with the BOS or end-of-document token")
    if max_new_tokens < 0:
        raise ConfigError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
        raise ConfigError(f"generate: seed {seed} is outside [{SEED_MIN}, {SEED_MAX}]")
    longest = max(len(p) for p in prompt_ids)
    limit = model.cfg.max_seq_len
    if longest + max_new_tokens > limit:
        raise ConfigError(
            f"generate: a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
            f"model's max_seq_len={limit}",
            hint="shorten the prompt or ask for fewer new tokens",
        )
    vocab = model.cfg.vocab_size
    for row, prompt in enumerate(prompt_ids):
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ConfigError(f"generate: prompt {row} has token id {bad[0]} outside the vocabulary [0, {vocab})")


def _collect(new_tokens: list[list[int]], stop_ids: frozenset[int], done: list[bool], step_tokens: list[int]) -> None:
    """Append this step's tokens; a stop token ends its row and is not part of the output."""
    for row, token in enumerate(step_tokens):
        if done[row]:
            continue
        if token in stop_ids:
            done[row] = True
        else:
            new_tokens[row].append(token)


@torch.inference_mode()
def generate(model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, top_k: int = 0, stop_ids: Sequence[int] = (), seed: int | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """New tokens for each prompt (without the prompt, without the stop token that ended it).

    Greedy when temperature == 0. `seed` makes sampling reproducible (one generator for the batch,
    drawn once per step for every row). `use_cache=False` recomputes the whole sequence of each row
    at every step: slow, and the reference the cache is tested against.
    """
    _check_request(model, prompt_ids, max_new_tokens, seed)
    stops = frozenset(int(s) for s in stop_ids)
    new_tokens: list[list[int]] = [[] for _ in prompt_ids]
    done = [False] * len(prompt_ids)
    if max_new_tokens == 0:
        return new_tokens
    generator = seeded_generator(seed)
    step = _recompute_step(model, prompt_ids) if not use_cache else _cached_step(model, prompt_ids, max_new_tokens)
    logits = step(None)
    for i in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_p, top_k, generator)
        _collect(new_tokens, stops, done, nxt.tolist())
        if all(done) or i == max_new_tokens - 1:
            break
        logits = step(nxt)
    return new_tokens


def _cached_step(model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int):
    """A function: None -> logits after the prompts; tokens [B] -> logits after feeding them."""
    cache = SlotKVCache(model, len(prompt_ids), max(len(p) for p in prompt_ids) + max_new_tokens)
    positions = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)

    def step(tokens: torch.Tensor | None) -> torch.Tensor:
        nonlocal positions
        if tokens is None:
            return torch.stack([cache.prefill(model, row, prompt) for row, prompt in enumerate(prompt_ids)])
        logits = cache.decode(model, tokens, positions)
        positions = positions + 1
        return logits

    return step


def _recompute_step(model: torch.nn.Module, prompt_ids: list[list[int]]):
    """Like `_cached_step`, but each row runs alone and unpadded over its whole sequence, no cache."""
    device = next(model.parameters()).device
    sequences = [list(p) for p in prompt_ids]

    def step(tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is not None:
            for seq, token in zip(sequences, tokens.tolist()):
                seq.append(token)
        return torch.stack([model(torch.tensor([seq], dtype=torch.long, device=device))[0, -1] for seq in sequences])

    return step


def complete(model: torch.nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, *, temperature: float = 0.0,
             top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop_at_eod: bool = True) -> list[str]:
    """Text completions for text prompts (the tokenizer's `encode`/`decode`/`eod_id`).

    An empty prompt starts from the end-of-document token; generation of a row ends at
    end-of-document unless `stop_at_eod` is False.
    """
    eod = getattr(tokenizer, "eod_id", None)
    ids = [tokenizer.encode(p) if p else [eod] for p in prompts]
    stops = (eod,) if stop_at_eod and eod is not None else ()
    new = generate(model, ids, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, stop_ids=stops, seed=seed)
    return [tokenizer.decode(tokens) for tokens in new]
