"""Training objectives: what one step's batch is and which loss the parallel runner applies to it.

An objective has two methods the loop calls: `batch(batches, accum)` gives (inputs, targets,
loss_fn) for `runner.train_step`, and `metrics()` gives per-step numbers besides the loss. Each
is a named object built by `build_objective` from `[train] objective`; a new objective (weather
diffusion, ...) is one more entry in OBJECTIVES, never a branch inside the loop.

The runner averages a micro-batch's loss over `grad_accum` micro-batches (and pipeline
micro-batches) and over data-parallel ranks. Objectives that normalise by a global count
(loss tokens, pairs) therefore return `local sum x pieces / global count`, where pieces =
accumulation x pipeline micro-batches x data-parallel ranks: after the runner's averaging the
loss and its gradient are `global sum / global count`, however the batch was split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PretrainObjective:
    """Mean next-token loss over every token of the blend's rows."""

    name = "pretrain"

    def batch(self, batches: Iterator[torch.Tensor], accum: int) -> tuple[torch.Tensor, torch.Tensor, LossFn]:
        from auroragpt.train.trainer import cross_entropy, next_batch

        tokens, targets = next_batch(batches, accum)
        return tokens, targets, cross_entropy

    def metrics(self) -> dict[str, Any]:
        return {}


def split_pieces(layout, accum: int) -> int:
    """How many pieces the runner averages one step's loss over: accumulation x pipeline
    micro-batches x data-parallel ranks."""
    pipeline = layout.num_microbatches if layout.pp > 1 else 1
    return accum * pipeline * layout.dp


def global_sum(values: torch.Tensor, layout) -> torch.Tensor:
    """Sum over data-parallel ranks of a per-rank value that tp and pp ranks hold identically."""
    if not dist.is_initialized() or layout.world_size == 1:
        return values
    values = values.to(collective_device())
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu() / (layout.tp * layout.pp)


def collective_device() -> torch.device:
    """Where a small tensor must live for a collective on the default process group."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_objective(cfg, runner, model_cfg, info, loader=None):
    """The objective named by cfg.train.objective, ready for the loop."""
    name = cfg.train.objective
    if name == "pretrain":
        return PretrainObjective()
    if name == "sft":
        from auroragpt.train.sft import SFTObjective

        return SFTObjective(runner.layout, packed=cfg.post.pack)
    if name == "dpo":
        from auroragpt.train.dpo import build_dpo_objective

        return build_dpo_objective(cfg, runner, model_cfg, info, loader)
    raise ValueError(f"unknown objective {name!r}")


class FixedLossObjective:
    """An objective whose batches come from a family's own `next_batch` and whose loss is fixed
    (weather diffusion): nothing to add to the metrics."""

    def __init__(self, name: str, next_batch: Callable[..., tuple[Any, Any]], loss_fn: LossFn) -> None:
        self.name, self._next_batch, self._loss_fn = name, next_batch, loss_fn

    def batch(self, batches: Iterator[Any], accum: int) -> tuple[Any, Any, LossFn]:
        inputs, targets = self._next_batch(batches, accum)
        return inputs, targets, self._loss_fn

    def metrics(self) -> dict[str, Any]:
        return {}
