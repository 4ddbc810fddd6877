"""Activation checkpointing: recompute a block's activations in backward instead of storing them.

Modes of `parallel.activation_checkpointing`: "none"; "full" (store only each block's input);
"selective" (store the outputs of the matrix products and attention, recompute the cheap
element-wise work: norms, rotary, SiLU; most of full's memory saving for a few % of compute).
The library call `apply_activation_checkpoint` (and `parallelize`) also takes "every:N" or an
int N: full checkpointing of every N-th block only; the config does not offer it.
The block's `forward` is replaced on the instance rather than wrapping the module, so parameter
names (and therefore checkpoints and exports) stay exactly those of the single-device model.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from auroragpt.errors import ConfigError
from auroragpt.parallel.blocks import BlockSpec, find_blocks

SELECTIVE = "selective"


def parse_mode(mode: bool | str | int | None) -> int | str:
    """0 = off, n >= 1 = full checkpointing of every n-th block, "selective" = op-level on every block."""
    if mode in (None, False, "none", "off", 0):
        return 0
    if mode in (True, "full", 1):
        return 1
    if mode == SELECTIVE:
        return SELECTIVE
    if isinstance(mode, int) and not isinstance(mode, bool) and mode > 1:
        return mode
    if isinstance(mode, str) and mode.startswith("every:") and mode[6:].isdigit() and int(mode[6:]) >= 1:
        return int(mode[6:])
    raise ConfigError(
        f"activation_checkpoint = {mode!r} is not understood",
        hint='use "none", "full" (every block), "every:N" (every N-th block) or "selective" (recompute element-wise ops)',
    )


def apply_activation_checkpoint(model: nn.Module, mode: bool | str | int | None, blocks: BlockSpec = None) -> int:
    """Checkpoint the chosen blocks (`find_blocks`: the GPT's `model.layers`); returns how many were wrapped.

    A model with neither named blocks nor a `layers` container has its whole forward checkpointed,
    which still saves the memory of every activation but its input.
    """
    parsed = parse_mode(mode)
    if parsed == 0:
        return 0
    every = 1 if parsed == SELECTIVE else parsed
    context_fn = _selective_context if parsed == SELECTIVE else None
    found = find_blocks(model, blocks)
    if not found and blocks is None and not hasattr(model, "layers"):
        found = [model]
    wrapped = 0
    for index, block in enumerate(found):
        if index % every:
            continue
        block.forward = _checkpointed(block.forward, context_fn)
        wrapped += 1
    return wrapped


def _checkpointed(plain_forward, context_fn):
    # A plain closure (not functools.partial) so torch.compile sees the checkpoint call and traces it.
    extra = {"context_fn": context_fn} if context_fn is not None else {}

    def forward(*args, **kwargs):
        return checkpoint(plain_forward, *args, use_reentrant=False, **extra, **kwargs)

    return forward


@functools.cache
def _saved_ops() -> frozenset:
    """Operators whose outputs selective checkpointing keeps: matrix products and attention."""
    aten = torch.ops.aten
    names = ("mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    return frozenset(getattr(aten, n).default for n in names if hasattr(aten, n))


def _save_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _saved_ops() else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context():
    return create_selective_checkpoint_contexts(_save_matmuls)
