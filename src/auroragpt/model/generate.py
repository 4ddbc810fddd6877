"""Text generation for a `GPT`: a contiguous KV cache, sampling, and a full-recompute reference.

Prompts of different lengths share one batch by left padding: every row writes its keys into the
same cache slot, while `positions` keeps each row's own rotary positions and the cache's mask hides
the padding. The cache is what `GPT.forward` expects (`update(layer_id, k, v)`), so evaluation,
export checks and the server all generate through this one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from auroragpt.errors import ConfigError


class StaticKVCache:
    """Keys and values of every layer in preallocated [B, kv_heads, max_len, head_dim] buffers.

    Buffers are allocated on the first `update` of each layer, from the shape of the keys, so the
    cache needs no knowledge of the model's head counts. `pad_lengths[b]` leading slots of row b
    are padding: no query attends to them (except a padding query to itself, which keeps softmax
    finite).
    """

    def __init__(self, batch_size: int, max_len: int, pad_lengths: Sequence[int] | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.batch_size = batch_size
        self.max_len = max_len
        self.device = torch.device(device)
        pads = list(pad_lengths) if pad_lengths is not None else [0] * batch_size
        if len(pads) != batch_size:
            raise ValueError(f"pad_lengths has {len(pads)} entries for a batch of {batch_size}")
        self.pad_lengths = torch.tensor(pads, dtype=torch.long, device=self.device)
        self._keys: dict[int, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}
        self._filled: dict[int, int] = {}
        self._mask_key: tuple[int, int] | None = None
        self._mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Slots written so far (the same for every layer once a forward pass completes)."""
        return max(self._filled.values(), default=0)

    def update(self, layer_id: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = self._filled.get(layer_id, 0)
        new = k.shape[2]
        end = start + new
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        if layer_id not in self._keys:
            shape = (self.batch_size, k.shape[1], self.max_len, k.shape[3])
            self._keys[layer_id] = torch.empty(shape, dtype=k.dtype, device=k.device)
            self._values[layer_id] = torch.empty(shape, dtype=v.dtype, device=v.device)
        self._keys[layer_id][:, :, start:end] = k
        self._values[layer_id][:, :, start:end] = v
        self._filled[layer_id] = end
        return self._keys[layer_id][:, :, :end], self._values[layer_id][:, :, :end], self._mask_for(start, new)

    def _mask_for(self, start: int, new: int) -> torch.Tensor:
        """[B, 1, new, start+new]: causal, padding hidden; computed once per step for all layers."""
        if self._mask_key != (start, new):
            end = start + new
            keys = torch.arange(end, device=self.device)
            queries = torch.arange(start, end, device=self.device)
            causal = keys[None, :] <= queries[:, None]
            real_key = keys[None, :] >= self.pad_lengths[:, None]
            itself = keys[None, :] == queries[:, None]
            mask = causal[None] & (real_key[:, None, :] | itself[None])
            self._mask, self._mask_key = mask[:, None], (start, new)
        return self._mask


def _check_lengths(model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int) -> int:
    if not prompt_ids:
        raise ConfigError("generate: no prompts given")
    if any(len(p) == 0 for p in prompt_ids):
        raise ConfigError("generate: a prompt has no tokens", hint="start empty prompts with the BOS or end-of-document token")
    if max_new_tokens < 0:
        raise ConfigError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
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
    return longest


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row from logits [B, V]: argmax when temperature == 0, else top-k/top-p sampling."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


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

    Greedy when temperature == 0. `seed` makes sampling reproducible. `use_cache=False` recomputes
    the whole sequence of each row at every step: slow, and the reference the cache is tested against.
    """
    _check_lengths(model, prompt_ids, max_new_tokens)
    if not use_cache:
        return _generate_recompute(model, prompt_ids, max_new_tokens, temperature, top_p, top_k, stop_ids, seed)
    device = _model_device(model)
    generator = _generator(seed, device)
    stops = frozenset(int(s) for s in stop_ids)
    batch = len(prompt_ids)
    longest = max(len(p) for p in prompt_ids)
    pads = [longest - len(p) for p in prompt_ids]
    tokens = torch.zeros(batch, longest, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompt_ids):
        tokens[row, pads[row]:] = torch.tensor(prompt, dtype=torch.long, device=device)
    pad_t = torch.tensor(pads, dtype=torch.long, device=device)
    positions = (torch.arange(longest, device=device)[None, :] - pad_t[:, None]).clamp(min=0)
    cache = StaticKVCache(batch, longest + max_new_tokens, pads, device=device)
    new_tokens: list[list[int]] = [[] for _ in range(batch)]
    done = [False] * batch
    if max_new_tokens == 0:
        return new_tokens
    logits = model(tokens, positions=positions, cache=cache)[:, -1]
    for step in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_p, top_k, generator)
        _collect(new_tokens, stops, done, nxt.tolist())
        if all(done) or step == max_new_tokens - 1:
            break
        positions = positions[:, -1:] + 1
        logits = model(nxt[:, None], positions=positions, cache=cache)[:, -1]
    return new_tokens


def _generate_recompute(model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float,
                        top_p: float, top_k: int, stop_ids: Sequence[int], seed: int | None) -> list[list[int]]:
    """Each row run alone and unpadded over its whole sequence at every step; no cache, no mask."""
    device = _model_device(model)
    generator = _generator(seed, device)
    stops = frozenset(int(s) for s in stop_ids)
    sequences = [list(p) for p in prompt_ids]
    new_tokens: list[list[int]] = [[] for _ in prompt_ids]
    done = [False] * len(prompt_ids)
    for _ in range(max_new_tokens):
        rows = []
        for seq in sequences:
            rows.append(model(torch.tensor([seq], dtype=torch.long, device=device))[0, -1])
        nxt = sample_next(torch.stack(rows), temperature, top_p, top_k, generator).tolist()
        _collect(new_tokens, stops, done, nxt)
        if all(done):
            break
        for seq, token in zip(sequences, nxt):
            seq.append(token)
    return new_tokens
