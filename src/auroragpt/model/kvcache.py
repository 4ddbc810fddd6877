"""The KV cache used for generation: one sequence per slot, each at its own position.

Keys and values of every layer live in preallocated [slots, kv_heads, max_len, head_dim] buffers.
A prompt is prefilled into one slot (in chunks, which bounds the logits held at once); a decode
step then feeds one token for each of the slots 0..b-1, each at its own position, so rows of
different lengths share a step without padding: rotary angles and the attention mask are per row.
`model.generate` (a fixed batch) and the serving engine (continuous batching, which keeps its
running rows packed in slots 0..b-1 with `move`) both generate through this class.
"""

from __future__ import annotations

import torch


class _PrefillView:
    """What `GPT.forward` sees while prefilling positions start.. of one slot.

    Returns all keys so far with mask None: the model aligns the chunk's queries causally at the
    end of the keys.
    """

    def __init__(self, cache: "SlotKVCache", slot: int, start: int) -> None:
        self.cache, self.slot, self.start = cache, slot, start

    def update(self, layer_id: int, k: torch.Tensor, v: torch.Tensor):
        keys, values = self.cache.keys[layer_id], self.cache.values[layer_id]
        end = self.start + k.shape[2]
        keys[self.slot, :, self.start:end] = k[0]
        values[self.slot, :, self.start:end] = v[0]
        if self.start == 0:
            return k, v, None
        rows = slice(self.slot, self.slot + 1)
        return keys[rows, :, :end], values[rows, :, :end], None


class _DecodeView:
    """What `GPT.forward` sees during one decode step of slots 0..b-1, each at its own position."""

    def __init__(self, cache: "SlotKVCache", positions: torch.Tensor) -> None:
        self.cache = cache
        self.rows = torch.arange(positions.shape[0], device=positions.device)
        self.positions = positions
        self.length = int(positions.max().item()) + 1
        span = torch.arange(self.length, device=positions.device)
        self.mask = (span[None, :] <= positions[:, None])[:, None, None, :]  # [b, 1, 1, S]

    def update(self, layer_id: int, k: torch.Tensor, v: torch.Tensor):
        b = self.rows.shape[0]
        keys, values = self.cache.keys[layer_id], self.cache.values[layer_id]
        keys[self.rows, :, self.positions] = k[:, :, 0]
        values[self.rows, :, self.positions] = v[:, :, 0]
        return keys[:b, :, : self.length], values[:b, :, : self.length], self.mask


class SlotKVCache:
    """`slots` sequences of up to `max_len` tokens for `model` (a `GPT`), on its device and dtype."""

    def __init__(self, model: torch.nn.Module, slots: int, max_len: int) -> None:
        cfg = model.cfg
        if max_len > cfg.max_seq_len:
            raise ValueError(f"a cache of {max_len} positions exceeds the model's max_seq_len={cfg.max_seq_len}")
        param = next(model.parameters())
        shape = (slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.slots, self.max_len = slots, max_len
        self.device = param.device
        self.keys = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(cfg.n_layers)]

    def prefill(self, model: torch.nn.Module, slot: int, ids: list[int], chunk: int = 512) -> torch.Tensor:
        """Run prompt `ids` into `slot` (positions 0..len-1); the logits [V] after its last token."""
        if not 0 < len(ids) <= self.max_len:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit a cache of {self.max_len} positions")
        logits = None
        for start in range(0, len(ids), chunk):
            tokens = torch.tensor([ids[start: start + chunk]], device=self.device)
            positions = None if start == 0 else torch.arange(start, start + tokens.shape[1], device=self.device)[None]
            logits = model(tokens, positions, _PrefillView(self, slot, start))
        return logits[0, -1]

    def decode(self, model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed tokens[i] at positions[i] to slot i for i < b; the logits [b, V] that follow."""
        tokens = tokens.to(self.device)
        positions = positions.to(self.device)
        if int(positions.max().item()) >= self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions")
        return model(tokens[:, None], positions[:, None], _DecodeView(self, positions))[:, -1]

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot `src` into slot `dst` (keeps running rows packed)."""
        for layers in (self.keys, self.values):
            for layer in layers:
                layer[dst, :, :length] = layer[src, :, :length]
