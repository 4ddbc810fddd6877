"""SWiPe window (+ sequence) parallelism for the Swin weather model, applied from outside it.

Every layer of the denoiser except window attention acts on each grid point alone, so a rank can
run the unmodified model on its own part of the field. Only the attention of each block is swapped
(`window_parallelize`) for one that (1) turns its local points into the whole tile of windows for a
subset of heads (`heads_all_to_all`, when sp > 1), (2) shifts the tile by half a window on shifted
blocks by exchanging border quadrants with the neighbouring tiles (`halo_roll`, periodic in both
directions like the single-device roll; done on the block's D-channel input before the pointwise qkv
projection, over the sp ranks' column strips, and on the D/sp-channel output after attention), (3) attends inside the tile's windows with the pole mask of
their global latitude, and (4) undoes (2) and (1). Parameters keep their names and are replicated,
so after backward their gradients are summed over the layout (`reduce_gradients`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window_comm import WindowGroup, halo_roll, heads_all_to_all
from auroragpt.parallel.window_layout import WindowLayout
from auroragpt.weather import windows as win


class WindowParallelAttention(nn.Module):
    """Drop-in for `WindowAttention` on a rank's [B, Ht, Wt/sp, D] share of a tile; same parameters."""

    def __init__(self, inner: nn.Module, group: WindowGroup) -> None:
        super().__init__()
        self.cfg = inner.cfg
        self.qkv = inner.qkv
        self.proj = inner.proj
        self.group = group
        self.preshifted = False  # set by a pipeline stage that receives its input already shifted
        layout = group.layout
        pi = group.coords[0]
        row_mask = win.pole_mask(layout.grid_h, self.cfg.window_h, self.cfg.window_h // 2)
        rows_per_tile = layout.tile_h // self.cfg.window_h
        tile_rows = row_mask[pi * rows_per_tile:(pi + 1) * rows_per_tile]  # the global latitude of this tile
        self.register_buffer("shifted_mask", win.expand_row_mask(tile_rows, self.cfg.window_w), persistent=False)

    def forward(self, x: torch.Tensor, shifted: bool, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        # `mask` is the model's mask for a field of this rank's size; the tile's own is used instead
        c, g = self.cfg, self.group
        sp = g.layout.sp
        b, h, w, d = x.shape
        heads = c.n_heads // sp
        sh, sw = (c.window_h // 2, c.window_w // 2) if shifted and not self.preshifted else (0, 0)
        # qkv is pointwise, so shifting its D-channel input moves 3x fewer bytes than shifting qkv
        x = halo_roll(x, sh, sw, +1, g, fine=True)
        qkv = self.qkv(x).view(b, h, w, 3, sp, heads, c.head_dim)
        qkv = heads_all_to_all(qkv.permute(4, 0, 1, 2, 3, 5, 6), g, "sp.all_to_all")  # [sp(cols), B, h, w, 3, hh, hd]
        qkv = qkv.permute(1, 2, 0, 3, 4, 5, 6).reshape(b, h, sp * w, 3 * heads * c.head_dim)
        parts = win.window_partition(qkv, c.window_h, c.window_w)
        nh, nw, n = parts.shape[1], parts.shape[2], parts.shape[3]
        parts = parts.view(b, nh, nw, n, 3, heads, c.head_dim).permute(4, 0, 1, 2, 5, 3, 6)
        q, k, v = parts[0], parts[1], parts[2]
        q, k = win.apply_rope(q, *rope), win.apply_rope(k, *rope)
        out = win.window_attention(q, k, v, self.shifted_mask.to(q.device) if shifted else None)
        out = out.permute(0, 1, 2, 4, 3, 5).reshape(b, nh, nw, n, heads * c.head_dim)
        out = halo_roll(win.window_unpartition(out, c.window_h, c.window_w), sh, sw, -1, g)  # [B, h, sp*w, hh*hd]
        out = out.view(b, h, sp, w, heads * c.head_dim).permute(2, 0, 1, 3, 4)
        out = heads_all_to_all(out, g, "sp.all_to_all")  # [sp(head chunks), B, h, w, hh*hd]
        return self.proj(out.permute(1, 2, 3, 0, 4).reshape(b, h, w, d))


def window_group(layout: WindowLayout, ledger: CommLedger | None = None, stages: int = 1) -> WindowGroup:
    """This rank's `WindowGroup`; creates the sp process groups (a collective: every rank calls it).
    With `stages` pipeline stages, stage k is ranks [k * n, (k + 1) * n) of the n-rank layout."""
    world, rank = dist.get_world_size(), dist.get_rank()
    size = layout.world_size
    layout.check_world(world // stages if world % stages == 0 else world)
    sp_group = None
    if layout.sp > 1:
        for first in range(0, world, layout.sp):
            group = dist.new_group(list(range(first, first + layout.sp)))
            if first <= rank < first + layout.sp:
                sp_group = group
    base = rank // size * size
    return WindowGroup(layout=layout, rank=rank - base, ledger=ledger or CommLedger(), sp_group=sp_group, base=base)


def window_parallelize(model: nn.Module, group: WindowGroup) -> nn.Module:
    """Swap the attention of every block of a `SwinDenoiser` for its window-parallel form, in place."""
    for block in model.layers.values():
        block.attention = WindowParallelAttention(block.attention, group)
    return model


def field_noise(group: WindowGroup):
    """randn_like for a rank's part of the field that draws the whole field from the (shared) global
    RNG and keeps this rank's part, so the noise is the one device's, whatever the layout."""
    layout = group.layout

    def noise_like(local: torch.Tensor) -> torch.Tensor:
        b, ch = local.shape[:2]
        full = torch.randn(b, ch, layout.grid_h, layout.grid_w, dtype=local.dtype, device=local.device)
        return shard_field(full, group)

    return noise_like


def shard_field(x: torch.Tensor, group: WindowGroup) -> torch.Tensor:
    """This rank's part [B, C, Ht, Wt/sp] of a global [B, C, H, W] field."""
    rows, cols = group.layout.local_slices(group.rank)
    return x[:, :, rows, cols].contiguous()


def gather_field(local: torch.Tensor, group: WindowGroup) -> torch.Tensor:
    """The global [B, C, H, W] field from every rank's part (all ranks get it)."""
    layout = group.layout
    parts = [torch.empty_like(local) for _ in range(layout.world_size)]
    dist.all_gather(parts, local.contiguous())
    b, ch = local.shape[:2]
    out = local.new_empty(b, ch, layout.grid_h, layout.grid_w)
    for rank, part in enumerate(parts):
        rows, cols = layout.local_slices(rank)
        out[:, :, rows, cols] = part
    return out


def reduce_gradients(model: nn.Module, group: WindowGroup) -> None:
    """Sum the replicated parameters' gradients over the layout (each rank saw part of the field)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or group.layout.world_size == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    n = group.layout.world_size
    group.ledger.record("grad.all_reduce", 2 * (n - 1) * flat.numel() * flat.element_size() // n, 2 * (n - 1))
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
