"""torch.compile per transformer block: small graphs that compile once and are reused by every layer."""

from __future__ import annotations

from torch import nn


def apply_compile(model: nn.Module, *, fullgraph: bool = False) -> int:
    """Compile each block in place (`nn.Module.compile` keeps the parameter names); returns the count."""
    count = 0
    for block in model.layers.values():
        block.compile(fullgraph=fullgraph)
        count += 1
    return count
