"""Activation checkpointing: recompute a block's activations in backward instead of storing them.

The block's `forward` is replaced on the instance rather than wrapping the module, so parameter
names (and therefore checkpoints and exports) stay exactly those of the single-device model.
"""

from __future__ import annotations

from torch import nn
from torch.utils.checkpoint import checkpoint

from auroragpt.errors import ConfigError


def parse_mode(mode: bool | str | int | None) -> int:
    """Checkpoint every n-th block: 0 = off, 1 = every block ("full"), n = every n-th block."""
    if mode in (None, False, "none", "off", 0):
        return 0
    if mode in (True, "full", 1):
        return 1
    if isinstance(mode, int) and not isinstance(mode, bool) and mode > 1:
        return mode
    if isinstance(mode, str) and mode.startswith("every:") and mode[6:].isdigit() and int(mode[6:]) >= 1:
        return int(mode[6:])
    raise ConfigError(
        f"activation_checkpoint = {mode!r} is not understood",
        hint='use "none", "full" (every block) or "every:N" (every N-th block)',
    )


def apply_activation_checkpoint(model: nn.Module, mode: bool | str | int | None) -> int:
    """Checkpoint the chosen blocks of `model.layers`; returns how many were wrapped."""
    every = parse_mode(mode)
    if every == 0:
        return 0
    wrapped = 0
    for index, block in enumerate(model.layers.values()):
        if index % every:
            continue
        block.forward = _checkpointed(block.forward)
        wrapped += 1
    return wrapped


def _checkpointed(plain_forward):
    # A plain closure (not functools.partial) so torch.compile sees the checkpoint call and traces it.
    def forward(*args, **kwargs):
        return checkpoint(plain_forward, *args, use_reentrant=False, **kwargs)

    return forward
