"""SWiPe as a layout of the trainer: a weather model on wp x sp ranks per sample, FSDP2 / DDP outside.

`parallelize_weather` is the weather family's `parallelize`: with wp = sp = pp = 1 it is the plain
data-parallel one; with wp x sp > 1 it swaps each block's attention for its window-parallel form
(`window_parallelize`, before FSDP2 wraps the blocks), and the runner cuts every sample's field to
this rank's tile (`shard_field`) before the model sees it. The noise travels inside the sample
(`weather.objective.with_noise`), so it is the one device's whatever the layout. Each rank's loss is
the mean over its tile; tiles are equal, so the mean over the window ranks is the field's mean, and
its gradient the window ranks' gradients summed and divided by wp x sp (`reduce_window_grads`,
after FSDP2 has averaged over the data-parallel ranks: both are linear, so the order is free).
Parameters stay whole and named as on one device, so checkpoints (DCP) move between layouts.
With pp > 1 the pipeline runner of `window_pipeline_train` takes over.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.layout import ParallelLayout
from auroragpt.parallel.parallelize import LossFn, ParallelModel, parallelize
from auroragpt.parallel.window import shard_field, window_parallelize
from auroragpt.parallel.window_comm import WindowGroup
from auroragpt.parallel.window_layout import WindowLayout


def mesh_window_group(layout: ParallelLayout, mesh, model_cfg, base: int | None = None) -> WindowGroup:
    """This rank's `WindowGroup` from the trainer's mesh (wp and sp its innermost dims); `base` is
    the global rank of this sample's first tile (default: this rank's own group)."""
    window = WindowLayout.for_model(model_cfg, wp_h=layout.wp_lat, wp_w=layout.wp // layout.wp_lat, sp=layout.sp)
    inside = mesh.get_local_rank("wp") * layout.sp + mesh.get_local_rank("sp") if layout.window > 1 else 0
    own_base = dist.get_rank() - inside
    sp_group = mesh["sp"].get_group() if layout.sp > 1 else None
    return WindowGroup(layout=window, rank=inside, ledger=CommLedger(), sp_group=sp_group,
                       base=own_base if base is None else base)


def window_process_group(layout: ParallelLayout, mesh):
    """The process group of one sample's wp x sp ranks (None when a sample has one rank)."""
    return mesh["wp", "sp"]._flatten("wp_sp").get_group() if layout.window > 1 else None


@torch.no_grad()
def reduce_window_grads(params: list[nn.Parameter], n: int, group) -> None:
    """Gradients of the field's mean loss from the tiles' mean losses: sum over the group, / n.
    FSDP2's gradients are DTensors sharded over the data-parallel ranks; their local shards line
    up across the window ranks (same shapes, same mesh position), so they are summed as they are."""
    from torch.distributed.tensor import DTensor

    if n == 1:
        return
    grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class WindowParallelModel(ParallelModel):
    """The data-parallel runner of a window-parallelized weather model: each step's fields are cut
    to this rank's tile, and the window ranks' gradients and losses are combined after it."""

    def __init__(self, base: ParallelModel, group: WindowGroup, window_pg) -> None:
        super().__init__(base.model_parts, base.layout, base.mesh, base.device, mixed_precision=base.mixed_precision)
        self.window_group, self._window_pg = group, window_pg

    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, grad_accum: int = 1) -> torch.Tensor:
        loss = super().train_step(shard_field(tokens, self.window_group), targets, loss_fn, grad_accum)
        reduce_window_grads(list(self.parameters()), self.layout.window, self._window_pg)
        return loss

    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        return super().eval_loss(shard_field(tokens, self.window_group), targets, loss_fn)

    def _average_over_ranks(self, local: torch.Tensor) -> torch.Tensor:
        """Mean over data-parallel replicas and the window ranks' equal tiles."""
        value = local / (self.layout.dp * self.layout.window)
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def parallelize_weather(model: nn.Module, layout: ParallelLayout, mesh, **options) -> ParallelModel:
    """The weather family's parallelize: plain data parallelism, SWiPe (wp, sp) with FSDP2 / DDP
    outside, or a SWiPe pipeline (pp > 1)."""
    if layout.pp > 1:
        from auroragpt.parallel.window_pipeline_train import parallelize_weather_pipeline

        return parallelize_weather_pipeline(model, layout, mesh, **options)
    if layout.window == 1:
        return parallelize(model, layout, mesh, **options)
    group = mesh_window_group(layout, mesh, model.cfg)
    window_parallelize(model, group)  # before FSDP2 wraps the blocks: it shards the swapped modules' weights
    window_pg = window_process_group(layout, mesh)
    return WindowParallelModel(parallelize(model, layout, mesh, **options), group, window_pg)
