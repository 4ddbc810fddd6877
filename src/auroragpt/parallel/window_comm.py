"""The two communications of SWiPe, as autograd functions that count themselves in a `CommLedger`.

- `halo_roll`: the half-window shift of a window-parallel tile. The global roll
  `out[r, c] = x[r + dh, c + dw]` (periodic) only moves a tile's border strips and corner to three
  neighbouring tiles (north, west, north-west for the shift; the mirror for the unshift), so each
  rank sends at most three quadrants in one `batch_isend_irecv`, merged into one message per peer.
  Its adjoint is the opposite roll, which is the backward.
- `heads_all_to_all`: Ulysses-style sequence parallelism inside a tile: tokens split over the SP
  ranks become heads split over them (and back); its adjoint is the reverse all-to-all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window_layout import WindowLayout


@dataclass(frozen=True)
class WindowGroup:
    """This rank's place in a layout plus the process groups and ledger its calls use."""

    layout: WindowLayout
    rank: int
    ledger: CommLedger
    sp_group: object | None = None  # the ProcessGroup of this rank's sp ranks (None when sp == 1)
    base: int = 0  # global rank of this layout's rank 0 (pipeline stages hold one layout each)

    @property
    def global_rank(self) -> int:
        return self.base + self.rank

    @property
    def coords(self) -> tuple[int, int, int]:
        return self.layout.coords(self.rank)

    def tiles(self, fine: bool) -> tuple[int, int, int, int]:
        """(grid rows, grid columns, my row, my column) of the tiles a roll moves data between:
        the WP tiles, or (fine) the column strips the sp ranks hold outside attention."""
        pi, pj, s = self.coords
        if fine:
            return self.layout.wp_h, self.layout.wp_w * self.layout.sp, pi, pj * self.layout.sp + s
        return self.layout.wp_h, self.layout.wp_w, pi, pj

    def rank_at(self, i: int, j: int, fine: bool) -> int:
        """Global rank of tile (i, j) of `tiles(fine)`; indices wrap (the roll is periodic)."""
        sp = self.layout.sp
        if fine:
            j %= self.layout.wp_w * sp
            return self.base + self.layout.rank_of(i, j // sp, j % sp)
        return self.base + self.layout.rank_of(i, j, self.coords[2])


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _roll_tile(x: torch.Tensor, dh: int, dw: int, sign: int, g: WindowGroup, fine: bool, kind: str) -> torch.Tensor:
    """out[r, c] = x[r + sign*dh, c + sign*dw] over the global periodic grid, for x: [B, Ht, Wt, C]."""
    ht, wt = x.shape[1], x.shape[2]
    # rows/columns a tile keeps, and the strip it gives away (to the north/west when sign > 0)
    keep_r, give_r = (slice(dh, ht), slice(0, dh)) if sign > 0 else (slice(0, ht - dh), slice(ht - dh, ht))
    keep_c, give_c = (slice(dw, wt), slice(0, dw)) if sign > 0 else (slice(0, wt - dw), slice(wt - dw, wt))
    rows = {0: keep_r, 1: give_r}
    cols = {0: keep_c, 1: give_c}
    kinds = [(a, b) for a in (0, 1) for b in (0, 1) if (not a or dh) and (not b or dw)]
    _, _, pi, pj = g.tiles(fine)
    d = -sign  # grid offset of the tile a given piece goes to
    dest = {k: g.rank_at(pi + d * k[0], pj + d * k[1], fine) for k in kinds}
    src = {k: g.rank_at(pi - d * k[0], pj - d * k[1], fine) for k in kinds}
    piece = {k: x[:, rows[k[0]], cols[k[1]]] for k in kinds}
    got: dict[tuple[int, int], torch.Tensor] = {}
    sends: dict[int, list[tuple[int, int]]] = {}
    recvs: dict[int, list[tuple[int, int]]] = {}
    for k in kinds:
        if dest[k] == g.global_rank:  # this tile is its own neighbour along that axis
            got[k] = piece[k]
        else:
            sends.setdefault(dest[k], []).append(k)
            recvs.setdefault(src[k], []).append(k)
    ops, buffers, sent = [], {}, 0
    for peer, ks in sends.items():
        buf = torch.cat([piece[k].reshape(-1) for k in ks])
        sent += _nbytes(buf)
        ops.append(dist.P2POp(dist.isend, buf, peer))
    for peer, ks in recvs.items():
        buffers[peer] = torch.empty(sum(piece[k].numel() for k in ks), dtype=x.dtype, device=x.device)
        ops.append(dist.P2POp(dist.irecv, buffers[peer], peer))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    g.ledger.record(kind, sent, len(sends))
    for peer, ks in recvs.items():
        chunks = buffers[peer].split([piece[k].numel() for k in ks])
        for k, chunk in zip(ks, chunks):
            got[k] = chunk.view(piece[k].shape)  # a tile's pieces have the same shapes on every rank
    order = (0, 1) if sign > 0 else (1, 0)  # kept part first for a shift, received part first for an unshift
    row_blocks = []
    for a in order:
        parts = [got[(a, b)] for b in order if (a, b) in got]
        if parts:
            row_blocks.append(torch.cat(parts, dim=2))
    return torch.cat(row_blocks, dim=1)


class _HaloRoll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dh: int, dw: int, sign: int, g: WindowGroup, fine: bool) -> torch.Tensor:
        ctx.args = (dh, dw, sign, g, fine)
        return _roll_tile(x.contiguous(), dh, dw, sign, g, fine, "wp.shift" if sign > 0 else "wp.unshift")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        dh, dw, sign, g, fine = ctx.args
        kind = "wp.shift.grad" if sign > 0 else "wp.unshift.grad"
        return _roll_tile(grad.contiguous(), dh, dw, -sign, g, fine, kind), None, None, None, None, None


def halo_roll(x: torch.Tensor, dh: int, dw: int, sign: int, g: WindowGroup, fine: bool = False) -> torch.Tensor:
    """The window-parallel `shift` (sign=+1) or `unshift` (sign=-1) of a [B, Ht, Wt, C] tile, or
    (fine) of this rank's [B, Ht, Wt/sp, C] column strip (needs dw <= Wt/sp)."""
    if dh == 0 and dw == 0:
        return x
    return _HaloRoll.apply(x, dh, dw, sign, g, fine)


def _all_to_all(x: torch.Tensor, g: WindowGroup, kind: str) -> torch.Tensor:
    """x: [sp, ...] chunk j goes to sp rank j; returns [sp, ...] with chunk i from sp rank i."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=g.sp_group)
    sp = x.shape[0]
    g.ledger.record(kind, _nbytes(x) * (sp - 1) // sp, sp - 1)
    return out


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, g: WindowGroup, kind: str) -> torch.Tensor:
        ctx.args = (g, kind)
        return _all_to_all(x, g, kind)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g, kind = ctx.args
        return _all_to_all(grad, g, kind + ".grad"), None, None


def heads_all_to_all(x: torch.Tensor, g: WindowGroup, kind: str) -> torch.Tensor:
    """Equal-split all-to-all over the sp group along dim 0 (differentiable)."""
    if g.layout.sp == 1:
        return x
    return _AllToAll.apply(x, g, kind)
