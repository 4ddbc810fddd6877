"""A Llama-style decoder written for one device.

Names follow torchtitan and map one to one onto Hugging Face's Llama (`tok_embeddings` ->
`model.embed_tokens`, `layers.i.attention.wq` -> `model.layers.i.self_attn.q_proj`, ...), and the
rotary embedding uses the same rotate-half layout, so export copies tensors without permuting them.

Nothing here knows about parallelism. Two choices keep the parallel code outside possible:
attention infers its local head count from tensor shapes (tensor parallelism shards wq/wk/wv
column-wise and wo row-wise), and a pipeline stage may drop `tok_embeddings`, `norm`, `output`
or entries of `layers` (a ModuleDict, so the surviving layers keep their names).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from auroragpt.model.presets import ModelConfig


class KVCache(Protocol):
    """What inference code hands to `GPT.forward` to keep keys and values between calls."""

    def update(self, layer_id: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store k, v ([B, kv_heads, T, head_dim], rotated) and return all keys, values and a mask.

        The mask is boolean, broadcastable to [B, 1, T, S], True where a query may attend; None
        means plain causal attention with the T new queries at the end of the S keys.
        """
        ...


def document_positions_and_mask(documents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions restarting at each document [B, T], and the causal same-document mask [B, 1, T, T]."""
    seqlen = documents.shape[1]
    index = torch.arange(seqlen, device=documents.device).expand_as(documents)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    first = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=documents.device).tril()
    same = documents[:, :, None] == documents[:, None, :]
    return index - first, (same & causal)[:, None]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rotary_tables(head_dim: int, max_positions: int, theta: float, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [max_positions, head_dim] in the rotate-half layout (halves repeated)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos + rotated.float() * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = cfg.head_dim
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        q = self.wq(x).view(bsz, seqlen, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(bsz, seqlen, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(bsz, seqlen, -1, self.head_dim).transpose(1, 2)
        if cos.dim() == 2:
            # The model's whole table (no explicit positions): this call's rows. Sliced here, not in
            # GPT.forward, because under sequence parallelism the model sees 1/tp of the sequence.
            cos, sin = cos[:seqlen], sin[:seqlen]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v, mask = cache.update(self.layer_id, k, v)
        n_keys = k.shape[2]
        if mask is None and n_keys != seqlen:
            # New queries sit at the end of the keys: bottom-right aligned causal mask.
            rows = torch.arange(seqlen, device=x.device)[:, None] + (n_keys - seqlen)
            mask = torch.arange(n_keys, device=x.device)[None, :] <= rows
        gqa = q.shape[1] != k.shape[1]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and seqlen > 1, enable_gqa=gqa
        )
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        extra = (mask,) if mask is not None else ()  # tensor parallelism prepares exactly the usual inputs
        h = x + self.attention(self.attention_norm(x), cos, sin, cache, *extra)
        return h + self.feed_forward(self.ffn_norm(h))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(cfg, i) for i in range(cfg.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output: nn.Linear | None = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def reset_rotary(self, device: torch.device | str | None = None) -> None:
        """Recompute the rotary tables, e.g. after building the model on the meta device."""
        device = device if device is not None else self.rope_cos.device
        cos, sin = rotary_tables(self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta, torch.device(device))
        self.rope_cos, self.rope_sin = cos, sin

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 x layers)."""
        std = self.cfg.init_std
        residual_std = std / (2 * self.cfg.n_layers) ** 0.5
        if self.tok_embeddings is not None:
            nn.init.normal_(self.tok_embeddings.weight, 0.0, std, generator=generator)
        for block in self.layers.values():
            for linear in (block.attention.wq, block.attention.wk, block.attention.wv, block.feed_forward.w1, block.feed_forward.w3):
                nn.init.normal_(linear.weight, 0.0, std, generator=generator)
            for linear in (block.attention.wo, block.feed_forward.w2):
                nn.init.normal_(linear.weight, 0.0, residual_std, generator=generator)
            block.attention_norm.reset_parameters()
            block.ffn_norm.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.output is not None and not self.cfg.tie_embeddings:
            nn.init.normal_(self.output.weight, 0.0, std, generator=generator)
        self.reset_rotary()

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                documents: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T]; a pipeline stage passes and returns hidden states.

        `documents` [B, T] marks the examples packed into each row: attention stays inside an
        example and positions restart at each one, so a packed row computes what its examples
        would alone."""
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        seqlen = h.shape[1]
        mask = None
        if documents is not None:
            positions, mask = document_positions_and_mask(documents)
        if positions is None:
            if seqlen > self.rope_cos.shape[0]:
                raise ValueError(f"sequence of {seqlen} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
            cos, sin = self.rope_cos, self.rope_sin  # Attention takes the rows it needs
        else:
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
        for layer in self.layers.values():
            h = layer(h, cos, sin, cache, mask) if mask is not None else layer(h, cos, sin, cache)
        if self.norm is not None:
            h = self.norm(h)
        return self.output(h) if self.output is not None else h
