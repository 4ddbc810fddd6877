"""Closed-form communication of a SWiPe layout, per rank and training step (forward + backward).

The same accounting `CommLedger` does while the code runs, derived from the layout alone, so the
benchmark can check that the implementation moves exactly what the design says, and price layouts
too large to run (AERIS scale). Bytes are what one rank sends; every rank sends the same (the grid
is periodic, so all tiles are alike). Parameter-gradient reduction is left out (it is data
parallelism's, the same for every layout).
"""

from __future__ import annotations

from auroragpt.parallel.window_layout import WindowLayout


def _roll(rows: int, cols: int, h: int, w: int, dh: int, dw: int) -> tuple[int, int]:
    """(points sent, messages) of one `halo_roll` of an h x w tile on a rows x cols tile grid."""
    points, peers = 0, set()
    for a in (0, 1):
        for b in (0, 1):
            offset = (a % rows, b % cols)
            if (a and not dh) or (b and not dw) or offset == (0, 0):
                continue  # empty piece, or one that stays on this rank
            points += (dh if a else h - dh) * (dw if b else w - dw)
            peers.add(offset)
    return points, len(peers)


def swipe_step_comm(layout: WindowLayout, cfg: object, batch: int, elem: int = 4) -> dict[str, tuple[int, int]]:
    """{call kind: (bytes, messages)} one rank sends in a training step of `cfg` (duck-typed
    `WeatherModelConfig`) on `batch` samples; kinds as `CommLedger` names them."""
    d, sp = cfg.dim, layout.sp
    dh, dw = cfg.window_h // 2, cfg.window_w // 2
    shifted = cfg.n_layers // 2
    out: dict[str, tuple[int, int]] = {}
    fine_pts, fine_msgs = _roll(layout.wp_h, layout.wp_w * sp, layout.tile_h, layout.local_w, dh, dw)
    tile_pts, tile_msgs = _roll(layout.wp_h, layout.wp_w, layout.tile_h, layout.tile_w, dh, dw)
    if layout.wp > 1 or sp > 1:
        for suffix in ("", ".grad"):
            out["wp.shift" + suffix] = (shifted * batch * fine_pts * d * elem, shifted * fine_msgs)
            out["wp.unshift" + suffix] = (shifted * batch * tile_pts * (d // sp) * elem, shifted * tile_msgs)
    if sp > 1:
        local = batch * layout.tile_h * layout.local_w
        per_block = local * 3 * d * elem * (sp - 1) // sp + local * d * elem * (sp - 1) // sp
        for suffix in ("", ".grad"):
            out["sp.all_to_all" + suffix] = (cfg.n_layers * per_block, cfg.n_layers * 2 * (sp - 1))
    return {k: v for k, v in out.items() if v[0] or v[1]}


def naive_step_bytes(layout: WindowLayout, cfg: object, batch: int, elem: int = 4) -> int:
    """Bytes one rank sends if, instead, the whole D-channel field is all-gathered before every
    shifted block (and its gradient reduce-scattered in backward)."""
    n = layout.world_size
    local = batch * layout.tile_h * layout.local_w * cfg.dim * elem
    return (cfg.n_layers // 2) * 2 * (n - 1) * local


def tile_estimate(cfg: object, layout: WindowLayout, *, pp: int, dp_shard: int, batch: int = 1,
                  peak_tflops: float, link_gbps: float, elem: int = 2) -> dict[str, float]:
    """Memory, traffic and step time of one tile (rank) for a layout too large to run.

    Assumptions, all explicit: weights bf16 + fp32 master + fp32 grads + Adam (18 B/param), sharded
    over pp x dp_shard; activations kept for backward ~ (8 dim + 3 ffn) values per point per block
    (no checkpointing, one micro-batch in flight); `elem`-byte activations on the wire; compute at
    `peak_tflops` (an upper bound on speed); `link_gbps` GB/s per tile for the SWiPe traffic, with
    no overlap of compute and communication (a lower bound on speed).
    """
    points = batch * layout.tile_h * layout.local_w
    blocks = cfg.n_layers / pp
    weights_gib = 18 * cfg.num_params() / (pp * dp_shard) / 2**30
    acts_gib = points * blocks * (8 * cfg.dim + 3 * cfg.ffn_dim) * elem / 2**30
    comm = swipe_step_comm(layout, cfg, batch, elem)
    comm_bytes = sum(b for b, _ in comm.values()) / pp
    compute_s = cfg.flops_per_point() * points / pp / (peak_tflops * 1e12)
    comm_s = comm_bytes / (link_gbps * 1e9)
    return {"weights_gib": weights_gib, "activations_gib": acts_gib, "comm_gib": comm_bytes / 2**30,
            "compute_s": compute_s, "comm_s": comm_s, "step_s_no_overlap": compute_s + comm_s}
