"""Shared helpers for the eval/export tests (a uniquely named module, importable from every test file)."""

from __future__ import annotations

import torch

from auroragpt.model.gpt import GPT
from auroragpt.model.presets import ModelConfig

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model card records the data mix and the tokens seen during training.",
    "def add(a, b):\n    return a + b\n",
    "Perplexity is the exponential of the mean next-token loss.",
] * 20


def make_model(vocab_size: int = 320, tie: bool = True, seed: int = 0, **overrides) -> GPT:
    """A tiny random model; a large init_std so greedy continuations are not degenerate."""
    fields = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=vocab_size,
                  max_seq_len=96, tie_embeddings=tie, rope_theta=5000.0, init_std=0.25)
    fields.update(overrides)
    model = GPT(ModelConfig(**fields))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.eval()
