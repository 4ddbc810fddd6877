"""The trainer's pipeline for a weather model: pp stages of Swin blocks, each on wp x sp ranks (SWiPe PP).

Stage k keeps the blocks `pipeline.stage_layers` gives it (names unchanged, so checkpoints line up
with any layout), the time embedding (every stage's adaLN needs it: a replicated parameter whose
gradient is summed over the stages), the input embedding on the first stage and the output head on
the last. Every stage reads the same samples, so each prepares t, the target and the weights itself
and only the [B, Ht, Wt/sp, D] activations travel between stages. When a stage's first block is a
shifted one, the previous stage sends its tile already shifted (`window_pipeline.send_shifted`: the
quadrants go straight to the ranks owning the shifted windows) and the block runs `preshifted`, so
the shift costs no message round of its own; the gradient goes back along the same routes.

The schedule is GPipe: the forwards of all micro-batches of an accumulation step, then their
backwards in the same order. Each stage talks only to its neighbours and to its own window ranks,
and every stage's ranks handle micro-batches in the same order, so sends always find their receives.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn

from auroragpt.parallel.layout import ParallelLayout
from auroragpt.parallel.parallelize import LossFn, ParallelModel
from auroragpt.parallel.pipeline import stage_layers
from auroragpt.parallel.window import shard_field, window_parallelize
from auroragpt.parallel.window_comm import WindowGroup, halo_roll
from auroragpt.parallel.window_pipeline import recv_grad_back, recv_shifted, send_grad_back, send_shifted
from auroragpt.parallel.window_train import mesh_window_group, reduce_window_grads, window_process_group

SHARED = ("time_in.", "time_out.")  # parameters every stage holds (the diffusion-time embedding)


def first_block_shift(cfg, layout: ParallelLayout, stage: int) -> tuple[int, int]:
    """(dh, dw) a stage's input arrives shifted by: half a window when its first block is shifted."""
    first = stage_layers(stage, layout.pp, cfg.n_layers).start
    return (cfg.window_h // 2, cfg.window_w // 2) if stage > 0 and first % 2 == 1 else (0, 0)


def cut_stage(model: nn.Module, stage: int, layout: ParallelLayout) -> nn.Module:
    """Delete what stage `stage` does not run, in place (surviving names unchanged)."""
    keep = {str(i) for i in stage_layers(stage, layout.pp, model.cfg.n_layers)}
    for name in list(model.layers):
        if name not in keep:
            del model.layers[name]
    if stage > 0:
        model.embed = None
    if stage < layout.pp - 1:
        model.final_ada = None
        model.out = None
    return model


class WindowPipelineModel(ParallelModel):
    """One pipeline stage of a window-parallel weather model with the trainer's step API."""

    def __init__(self, stage_module: nn.Module, layout: ParallelLayout, mesh, device: torch.device, *,
                 mixed_precision: bool, group: WindowGroup) -> None:
        stage = mesh.get_local_rank("pp")
        super().__init__([stage_module], layout, mesh, device, mixed_precision=mixed_precision, stage_indices=[stage])
        cfg = stage_module.cfg
        self.stage, self.group = stage, group
        self.prev = dataclasses.replace(group, base=group.base - layout.window)
        self.next = dataclasses.replace(group, base=group.base + layout.window)
        self.in_shift = first_block_shift(cfg, layout, stage)
        self.out_shift = first_block_shift(cfg, layout, stage + 1) if stage < layout.pp - 1 else (0, 0)
        self.block_names = list(stage_module.layers)
        if any(self.in_shift):
            stage_module.layers[self.block_names[0]].attention.preshifted = True
        self._window_pg = window_process_group(layout, mesh)
        self._shared = [p for n, p in stage_module.named_parameters() if n.startswith(SHARED)]

    # ----------------------------------------------------------------- the step
    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, grad_accum: int = 1) -> torch.Tensor:
        tokens, targets = tokens.to(self.device), targets.to(self.device)
        m = self.layout.num_microbatches
        pieces = [(x, y) for xs, ys in zip(tokens.chunk(grad_accum), targets.chunk(grad_accum))
                  for x, y in zip(xs.chunk(m), ys.chunk(m))]
        with self._autocast():
            saved = [self._forward(shard_field(x, self.group), y, loss_fn) for x, y in pieces]
        local = torch.zeros((), device=self.device)
        for h_in, out in saved:
            self._backward(h_in, out, 1.0 / len(pieces))
            if self.is_last_stage:
                local += out.detach().float() / len(pieces)
        self._reduce_grads()
        return self._average_over_ranks(local)

    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        tokens, targets = tokens.to(self.device), targets.to(self.device)
        _, out = self._forward(shard_field(tokens, self.group), targets, loss_fn)
        return self._average_over_ranks(out.float() if self.is_last_stage else torch.zeros((), device=self.device))

    def _forward(self, batch: torch.Tensor, target_rows: torch.Tensor, loss_fn: LossFn):
        """(this stage's input activation or None, the loss on the last stage / the output elsewhere)."""
        model = self.model_parts[0]
        x_in, t, cond, target, lat_w = model.prepare(batch)
        h_in = None
        if self.is_first_stage:
            h, ctx = model.embed_inputs(x_in, t, cond)
        else:
            shape = torch.Size((batch.shape[0], batch.shape[2], batch.shape[3], model.cfg.dim))
            like = torch.empty(0, device=batch.device)
            h_in = recv_shifted(shape, like, *self.in_shift, self.group, self.prev).requires_grad_(torch.is_grad_enabled())
            ctx = model.block_context(t, shape[1], batch.device, h_in.dtype)
            h = h_in
        for i, name in enumerate(self.block_names):
            h = model.layers[name](h, *ctx)
            if i == 0 and any(self.in_shift):  # the preshifted block's output goes back to the unshifted grid
                h = halo_roll(h, *self.in_shift, -1, self.group, fine=True)
        if self.is_last_stage:
            return h_in, loss_fn(model.errors(model.head(h, ctx), target, lat_w), target_rows)
        send_shifted(h.detach(), *self.out_shift, self.group, self.next)
        return h_in, h

    def _backward(self, h_in: torch.Tensor | None, out: torch.Tensor, scale: float) -> None:
        if self.is_last_stage:
            (out * scale).backward()
        else:
            out.backward(recv_grad_back(out.shape, out, *self.out_shift, self.group, self.next))
        if h_in is not None:
            send_grad_back(h_in.grad, *self.in_shift, self.group, self.prev)

    @torch.no_grad()
    def _reduce_grads(self) -> None:
        """Window ranks' mean, then the shared time embedding's contributions summed over stages."""
        reduce_window_grads(list(self.parameters()), self.layout.window, self._window_pg)
        shared = [p.grad for p in self._shared if p.grad is not None]
        if shared:
            flat = torch.cat([g.reshape(-1) for g in shared])
            dist.all_reduce(flat, group=self._pp_group())
            offset = 0
            for g in shared:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def _average_over_ranks(self, local: torch.Tensor) -> torch.Tensor:
        """The last stage's window ranks hold one tile's loss each; the other stages add zero."""
        value = (local if self.is_last_stage else torch.zeros_like(local)) / self.layout.window
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """The whole model's 2-norm: each stage's own parameters once, the shared ones once."""
        if norm_type != 2.0:
            raise ValueError("the weather pipeline clips by the 2-norm only")
        shared_ids = {id(p) for p in self._shared}
        own = [p.grad for p in self.parameters() if p.grad is not None and id(p) not in shared_ids]
        squares = torch.stack([g.float().pow(2).sum() for g in own]).sum() if own else torch.zeros((), device=self.device)
        dist.all_reduce(squares, group=self._pp_group())
        squares = squares + sum((p.grad.float().pow(2).sum() for p in self._shared if p.grad is not None),
                                torch.zeros((), device=self.device))
        total = squares.sqrt()
        if max_norm > 0:
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.mul_(coef)
        return total


def parallelize_weather_pipeline(model: nn.Module, layout: ParallelLayout, mesh, *, mixed_precision: bool = False,
                                 device: torch.device | str | None = None, **_options) -> ParallelModel:
    """This rank's stage of the weather model, window-parallel inside the stage."""
    stage = mesh.get_local_rank("pp")
    group = mesh_window_group(layout, mesh, model.cfg)
    window_parallelize(cut_stage(model, stage, layout), group)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return WindowPipelineModel(model, layout, mesh, device, mixed_precision=mixed_precision, group=group)
