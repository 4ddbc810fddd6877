"""Pipeline stages over Swin blocks with the half-window shift folded into the stage send (SWiPe PP).

When the first block of the next stage is shifted, a stage does not send its tile to the same tile
of the next stage (which would then exchange quadrants with its neighbours): it sends each quadrant
straight to the next-stage rank that owns the shifted window it lands in. The receiving block then
runs on an already shifted tile (`WindowParallelAttention.preshifted`) and only the unshift remains,
so the shift costs no message round of its own. Every rank of a layout sends to at most 4 ranks
(its counterpart and the 3 neighbours); with `dh = dw = 0` this is the plain stage send.
The gradient goes back along the same routes.

Each stage holds one `WindowGroup` (same layout, its own `base` rank); `peer` is the other stage's.
Tensors are a rank's [B, Ht, Wt/sp, D] column strip; quadrants move between strips (needs dw <= Wt/sp).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from auroragpt.parallel.window_comm import WindowGroup


def _kinds(dh: int, dw: int) -> list[tuple[int, int]]:
    return [(a, b) for a in (0, 1) for b in (0, 1) if (not a or dh) and (not b or dw)]


def _unshifted_slices(k: tuple[int, int], h: int, w: int, dh: int, dw: int) -> tuple[slice, slice]:
    """Where quadrant k sits in the sender's tile (1 = the strip that moves to the north/west)."""
    return (slice(0, dh) if k[0] else slice(dh, h)), (slice(0, dw) if k[1] else slice(dw, w))


def _shifted_slices(k: tuple[int, int], h: int, w: int, dh: int, dw: int) -> tuple[slice, slice]:
    """Where quadrant k lands in the receiver's shifted tile."""
    return (slice(h - dh, h) if k[0] else slice(0, h - dh)), (slice(w - dw, w) if k[1] else slice(0, w - dw))


def _routes(g: WindowGroup, peer: WindowGroup, kinds, outgoing: bool) -> dict[tuple[int, int], int]:
    """Rank of the other stage each quadrant goes to (outgoing) or comes from."""
    _, _, pi, pj = g.tiles(fine=True)  # outside attention a rank holds its sp column strip of the tile
    sign = -1 if outgoing else 1
    return {k: peer.rank_at(pi + sign * k[0], pj + sign * k[1], True) for k in kinds}


def _p2p(sends: dict[int, list[torch.Tensor]], recvs: dict[int, list[torch.Size]], like: torch.Tensor,
         g: WindowGroup, kind: str) -> dict[int, list[torch.Tensor]]:
    """One batch_isend_irecv, one message per peer (pieces concatenated); returns received pieces."""
    ops, buffers, nbytes = [], {}, 0
    for peer, pieces in sends.items():
        buf = torch.cat([p.reshape(-1) for p in pieces])
        nbytes += buf.numel() * buf.element_size()
        ops.append(dist.P2POp(dist.isend, buf, peer))
    for peer, shapes in recvs.items():
        buffers[peer] = like.new_empty(sum(torch.Size(s).numel() for s in shapes))
        ops.append(dist.P2POp(dist.irecv, buffers[peer], peer))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    if sends:
        g.ledger.record(kind, nbytes, len(sends))
    return {peer: [c.view(s) for c, s in zip(buffers[peer].split([torch.Size(s).numel() for s in shapes]), shapes)]
            for peer, shapes in recvs.items()}


def _group(routes: dict, items: dict) -> dict[int, list]:
    out: dict[int, list] = {}
    for k in sorted(routes):
        out.setdefault(routes[k], []).append(items[k])
    return out


def send_shifted(x: torch.Tensor, dh: int, dw: int, g: WindowGroup, peer: WindowGroup) -> None:
    """Send the [B, H, W, D] stage output so that it arrives shifted by (dh, dw) on the next stage."""
    h, w = x.shape[1], x.shape[2]
    kinds = _kinds(dh, dw)
    dest = _routes(g, peer, kinds, outgoing=True)
    pieces = {k: x[:, _unshifted_slices(k, h, w, dh, dw)[0], _unshifted_slices(k, h, w, dh, dw)[1]] for k in kinds}
    _p2p(_group(dest, pieces), {}, x, g, "pp.send")


def recv_shifted(shape: torch.Size, like: torch.Tensor, dh: int, dw: int, g: WindowGroup, peer: WindowGroup) -> torch.Tensor:
    """Receive the previous stage's output, already shifted by (dh, dw): [B, H, W, D]."""
    src = _routes(g, peer, _kinds(dh, dw), outgoing=False)
    return _recv_quadrants(shape, like, dh, dw, g, src, _shifted_slices, "pp.recv")


def send_grad_back(grad: torch.Tensor, dh: int, dw: int, g: WindowGroup, peer: WindowGroup) -> None:
    """Return the gradient of a `recv_shifted` tile, quadrant by quadrant, to the ranks that sent it."""
    h, w = grad.shape[1], grad.shape[2]
    kinds = _kinds(dh, dw)
    src = _routes(g, peer, kinds, outgoing=False)
    pieces = {k: grad[:, _shifted_slices(k, h, w, dh, dw)[0], _shifted_slices(k, h, w, dh, dw)[1]] for k in kinds}
    _p2p(_group(src, pieces), {}, grad, g, "pp.send.grad")


def recv_grad_back(shape: torch.Size, like: torch.Tensor, dh: int, dw: int, g: WindowGroup, peer: WindowGroup) -> torch.Tensor:
    """The gradient of a `send_shifted` tile, in the sender's (unshifted) coordinates."""
    dest = _routes(g, peer, _kinds(dh, dw), outgoing=True)
    return _recv_quadrants(shape, like, dh, dw, g, dest, _unshifted_slices, "pp.recv.grad")


def _recv_quadrants(shape: torch.Size, like: torch.Tensor, dh: int, dw: int, g: WindowGroup, routes: dict,
                    slices, tag: str) -> torch.Tensor:
    """Receive each quadrant from its peer in `routes` and place it where `slices` says: [B, H, W, D]."""
    b, h, w, d = shape
    kinds = _kinds(dh, dw)
    shapes = {}
    for k in kinds:
        rows, cols = slices(k, h, w, dh, dw)
        shapes[k] = (b, rows.stop - rows.start, cols.stop - cols.start, d)
    got = _p2p({}, _group(routes, shapes), like, g, tag)
    out = like.new_empty(shape)
    for peer_rank, ks in _group(routes, {k: k for k in kinds}).items():
        for k, piece in zip(ks, got[peer_rank]):
            rows, cols = slices(k, h, w, dh, dw)
            out[:, rows, cols] = piece
    return out