"""Closed-form communication of a SWiPe layout, per rank and training step (forward + backward).

The same accounting `CommLedger` does while the code runs, derived from the layout alone, so the
tests can check that the implementation moves exactly what the design says, and the benchmark can
price layouts too large to run (AERIS scale). Bytes are what one rank sends (a collective counts as
its ring algorithm: (n - 1) / n of the buffer per rank and pass); kinds are the ledger's names.
Inside one window layout every rank sends the same (the grid is periodic, all tiles are alike);
with pipeline stages each stage's ranks differ by their stage's blocks and sends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from auroragpt.parallel.window_layout import WindowLayout

Comm = dict[str, tuple[int, int]]  # {call kind: (bytes, messages)}

# One Aurora tile (half an Intel Max 1550), for the paper-scale estimate. Peak: the bf16 GEMM rate
# measured on one tile on pre-production Aurora (glennklockwood.com/garden/processors/pvc, from
# docs.alcf.anl.gov/aurora/node-performance-overview). Link: 8 Slingshot-11 NICs per node
# (docs.alcf.anl.gov/aurora/hardware-overview/machine-overview) x 200 Gb/s ports
# (alcf.anl.gov/support-center/aurora/interconnect) shared by 12 tiles: 200 GB/s / 12.
AURORA_TILE_PEAK_TFLOPS = 273.0
AURORA_TILE_LINK_GBPS = 8 * 200 / 8 / 12


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


def _add(total: Comm, kind: str, nbytes: int, messages: int) -> None:
    old = total.get(kind, (0, 0))
    total[kind] = (old[0] + nbytes, old[1] + messages)


def _both_ways(total: Comm, kind: str, nbytes: int, messages: int) -> None:
    """A differentiable exchange: the same bytes forward and (as `kind.grad`) backward."""
    _add(total, kind, nbytes, messages)
    _add(total, kind + ".grad", nbytes, messages)


def blocks_comm(layout: WindowLayout, cfg: object, batch: int, blocks: Iterable[int], *,
                preshifted_first: bool = False, elem: int = 4) -> Comm:
    """Traffic of running `blocks` (indices; odd ones are shifted) forward and backward.

    preshifted_first: the first block got its input already shifted from the previous pipeline
    stage (fused send), so its attention neither shifts nor unshifts; one roll of the block's
    D-channel output back to unshifted coordinates replaces them."""
    d, sp = cfg.dim, layout.sp
    dh, dw = cfg.window_h // 2, cfg.window_w // 2
    fine_pts, fine_msgs = _roll(layout.wp_h, layout.wp_w * sp, layout.tile_h, layout.local_w, dh, dw)
    tile_pts, tile_msgs = _roll(layout.wp_h, layout.wp_w, layout.tile_h, layout.tile_w, dh, dw)
    local = batch * layout.tile_h * layout.local_w
    out: Comm = {}
    for i, block in enumerate(blocks):
        if block % 2 and fine_msgs + tile_msgs:
            if i == 0 and preshifted_first:
                _both_ways(out, "wp.unshift", batch * fine_pts * d * elem, fine_msgs)
            else:
                _both_ways(out, "wp.shift", batch * fine_pts * d * elem, fine_msgs)
                _both_ways(out, "wp.unshift", batch * tile_pts * (d // sp) * elem, tile_msgs)
        if sp > 1:  # q, k, v to the head owners and the attention output back, each (sp-1)/sp of it
            nbytes = local * 3 * d * elem * (sp - 1) // sp + local * d * elem * (sp - 1) // sp
            _both_ways(out, "sp.all_to_all", nbytes, 2 * (sp - 1))
    return {k: v for k, v in out.items() if v[0] or v[1]}


def swipe_step_comm(layout: WindowLayout, cfg: object, batch: int, elem: int = 4) -> Comm:
    """{call kind: (bytes, messages)} one rank sends in a training step of `cfg` (duck-typed
    `WeatherModelConfig`) on `batch` samples, all blocks on one window layout."""
    return blocks_comm(layout, cfg, batch, range(cfg.n_layers), elem=elem)


def stage_send_messages(layout: WindowLayout, fused: bool) -> int:
    """Messages of one stage send: 1 to the same tile, or (fused) one per distinct next-stage owner
    of the four shifted quadrants (the same tile and its 3 neighbours on the sp-strip grid)."""
    if not fused:
        return 1
    rows, cols = layout.wp_h, layout.wp_w * layout.sp
    return len({(a % rows, b % cols) for a in (0, 1) for b in (0, 1)})


def pipeline_step_comm(layout: WindowLayout, cfg: object, batch: int, starts: Sequence[int], *,
                       fused: bool, elem: int = 4) -> list[Comm]:
    """Per stage, what one of its ranks sends in a training step (one micro-batch) when stage k
    runs blocks [starts[k], starts[k + 1]) on `layout` (starts[0] == 0).

    A stage sends its [B, Ht, Wt/sp, D] output forward ('pp.send') and the gradient of its input
    back ('pp.send.grad'); `fused`: when the next stage starts with a shifted block, the send goes
    quadrant by quadrant to the owners of the shifted windows and that block runs preshifted."""
    bounds = list(starts) + [cfg.n_layers]
    if bounds[0] != 0 or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"stage starts {list(starts)} must rise from 0 below n_layers = {cfg.n_layers}")
    tile_bytes = batch * layout.tile_h * layout.local_w * cfg.dim * elem
    stages = []
    for k in range(len(starts)):
        first_fused = k > 0 and fused and bounds[k] % 2 == 1
        comm = blocks_comm(layout, cfg, batch, range(bounds[k], bounds[k + 1]), preshifted_first=first_fused, elem=elem)
        if k + 1 < len(starts):
            _add(comm, "pp.send", tile_bytes, stage_send_messages(layout, fused and bounds[k + 1] % 2 == 1))
        if k > 0:
            _add(comm, "pp.send.grad", tile_bytes, stage_send_messages(layout, first_fused))
        stages.append(comm)
    return stages


def fsdp_step_comm(groups: Sequence[Sequence[Sequence[int]]], dp: int, elem: int = 4,
                   reshard_after_forward: bool = True) -> Comm:
    """FSDP2 traffic one rank sends per step over `dp` data-parallel ranks. `groups`: the parameter
    shapes of each `fully_shard` unit, the root (the model itself) first. Each parameter is cut
    along dim 0 in chunks of ceil(dim0 / dp) rows (the last padded), so a unit's flat shard is
    sum(ceil(dim0 / dp) x rest). Each unit is all-gathered before forward and again before
    backward if it was resharded (the root never is: its backward follows at once), and its
    gradients are reduce-scattered once."""
    out: Comm = {}
    if dp == 1:
        return out
    for i, shapes in enumerate(groups):
        shard = sum(math.ceil(s[0] / dp) * math.prod(s[1:]) for s in shapes) * elem
        gathers = 2 if reshard_after_forward and i > 0 else 1
        _add(out, "fsdp.all_gather", gathers * (dp - 1) * shard, gathers * (dp - 1))
        _add(out, "fsdp.reduce_scatter", (dp - 1) * shard, dp - 1)
    return out


def naive_step_comm(layout: WindowLayout, cfg: object, batch: int, elem: int = 4) -> Comm:
    """What one rank sends if, instead, the whole D-channel field is all-gathered before every
    shifted block and its gradient reduce-scattered in backward (ring: n - 1 tiles each way)."""
    n = layout.world_size
    tile = batch * layout.tile_h * layout.local_w * cfg.dim * elem
    shifted = cfg.n_layers // 2
    if n == 1 or not shifted:
        return {}
    return {"naive.all_gather": (shifted * (n - 1) * tile, shifted * (n - 1)),
            "naive.reduce_scatter": (shifted * (n - 1) * tile, shifted * (n - 1))}


def naive_step_bytes(layout: WindowLayout, cfg: object, batch: int, elem: int = 4) -> int:
    """Total bytes of `naive_step_comm`."""
    return sum(b for b, _ in naive_step_comm(layout, cfg, batch, elem).values())


def tile_estimate(cfg: object, layout: WindowLayout, *, pp: int, dp_shard: int, batch: int = 1,
                  peak_tflops: float, link_gbps: float, elem: int = 2, microbatches: int = 1) -> dict[str, float]:
    """Memory, traffic and step time of one tile (rank) for a layout too large to run.

    Assumptions, all explicit: weights bf16 + fp32 master + fp32 grads + Adam (18 B/param), sharded
    over pp x dp_shard; activations kept for backward ~ (8 dim + 3 ffn) values per point per block
    for one micro-batch (no checkpointing); `elem`-byte activations on the wire; compute at
    `peak_tflops` (an upper bound on speed); `link_gbps` GB/s per tile for all traffic, with no
    overlap of compute and communication (a lower bound on speed). compute_s / comm_s are one
    micro-batch of `batch` samples on one stage (comm_s: the whole model's SWiPe traffic / pp);
    stage_comm_s is the busiest stage's exact traffic, its stage sends included (blocks split
    evenly, fused sends, `pipeline_step_comm`). A step runs `microbatches` of them through the pp
    stages (1F1B: microbatches + pp - 1 slots of compute_s + stage_comm_s) and gathers the stage's
    weights once (bf16, `fsdp_step_comm` over dp_shard) and reduce-scatters their fp32 gradients once.
    """
    points = batch * layout.tile_h * layout.local_w
    blocks = cfg.n_layers / pp
    weights_gib = 18 * cfg.num_params() / (pp * dp_shard) / 2**30
    acts_gib = points * blocks * (8 * cfg.dim + 3 * cfg.ffn_dim) * elem / 2**30
    comm = swipe_step_comm(layout, cfg, batch, elem)
    comm_bytes = sum(b for b, _ in comm.values()) / pp
    compute_s = cfg.flops_per_point() * points / pp / (peak_tflops * 1e12)
    comm_s = comm_bytes / (link_gbps * 1e9)
    stage_params = [[[math.ceil(cfg.num_params() / pp)]]]  # one unit, one flat parameter
    gather = fsdp_step_comm(stage_params, dp_shard, elem=2, reshard_after_forward=False).get("fsdp.all_gather", (0, 0))[0]
    scatter = fsdp_step_comm(stage_params, dp_shard, elem=4).get("fsdp.reduce_scatter", (0, 0))[0]
    starts = [round(k * cfg.n_layers / pp) for k in range(pp)]
    stage_bytes = max(sum(b for b, _ in stage.values())
                      for stage in pipeline_step_comm(layout, cfg, batch, starts, fused=True, elem=elem))
    stage_comm_s = stage_bytes / (link_gbps * 1e9)
    step_s = (microbatches + pp - 1) * (compute_s + stage_comm_s) + (gather + scatter) / (link_gbps * 1e9)
    flops = cfg.flops_per_point() * points / pp * microbatches
    return {"weights_gib": weights_gib, "activations_gib": acts_gib, "comm_gib": comm_bytes / 2**30,
            "compute_s": compute_s, "comm_s": comm_s, "step_s_no_overlap": compute_s + comm_s,
            "stage_comm_gib": stage_bytes / 2**30, "stage_comm_s": stage_comm_s,
            "fsdp_gib": (gather + scatter) / 2**30, "step_s": step_s, "sustained_tflops": flops / step_s / 1e12}
