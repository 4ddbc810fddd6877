"""Supervised fine-tuning: next-token loss on assistant tokens only, normalised by the global
number of loss tokens of the step (across data-parallel ranks and micro-batches), so the loss
and its gradient do not depend on how the batch is split."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from auroragpt.data.examples import IGNORE, decode_packed_rows, decode_rows
from auroragpt.train.objectives import LossFn, global_sum, split_pieces


def masked_token_nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of -log p(target) over positions whose target is not IGNORE (fp32)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1), ignore_index=IGNORE, reduction="sum")


def sft_loss_fn(scale: float) -> LossFn:
    """loss(logits, targets) = masked sum x scale, scale = pieces / global loss tokens."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_token_nll_sum(logits, targets) * scale

    return loss


class SFTObjective:
    name = "sft"

    def __init__(self, layout, packed: bool = False) -> None:
        self.layout, self.packed = layout, packed
        self.loss_tokens = 0

    def batch(self, batches: Iterator[torch.Tensor], accum: int) -> tuple[torch.Tensor, torch.Tensor, LossFn]:
        rows = torch.cat([next(batches) for _ in range(accum)])
        tokens, targets = decode_packed_rows(rows) if self.packed else decode_rows(rows)
        count = global_sum((targets != IGNORE).sum().double(), self.layout)
        self.loss_tokens = int(round(float(count)))
        return tokens, targets, sft_loss_fn(split_pieces(self.layout, accum) / max(self.loss_tokens, 1))

    def metrics(self) -> dict[str, Any]:
        return {"loss_tokens": self.loss_tokens}
