"""One rank of the SWiPe traffic checks: every rank's `CommLedger` after one training step of
pipeline x window (x sequence) layouts, FSDP2 outside a window layout, and the naive all-gather
baseline of bench/swipe.py, so test_swipe_cost.py can set them beside the closed form.

Started N times with RANK / WORLD_SIZE / SWIPE_INIT (a file:// rendezvous);
argv: comma-separated specs ("pp2:1x2x1", "fsdp2:1x2x1", "naive:2x4x1"), output JSON path.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swipe_worker import BATCH, CFG, _inputs, _randomize  # noqa: E402  the equivalence runs' model and data

from auroragpt.parallel.comm_ledger import CommLedger  # noqa: E402
from auroragpt.parallel.window import reduce_gradients, shard_field, window_group, window_parallelize  # noqa: E402
from auroragpt.parallel.window_comm import halo_roll  # noqa: E402
from auroragpt.parallel.window_layout import WindowLayout  # noqa: E402
from auroragpt.parallel.window_pipeline import recv_grad_back, recv_shifted, send_grad_back, send_shifted  # noqa: E402
from auroragpt.weather.model import SwinDenoiser  # noqa: E402

SPLIT = 1  # stage 0 runs block 0, stage 1 blocks 1-3 (block 1 is shifted, so the send can carry the shift)


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "swipe.py"
    spec = importlib.util.spec_from_file_location("bench_swipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_ledgers(ledger: CommLedger) -> list[dict]:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, ledger.snapshot())
    return out


def pipeline_step(net: SwinDenoiser, layout: WindowLayout, fused: bool) -> list[dict]:
    """One forward + backward over 2 stages x the layout; every rank's ledger. A world larger than
    2 x the layout runs several such pipelines side by side (ranks [2kn, 2(k+1)n) form pipeline k)."""
    n = layout.world_size
    g = window_group(layout, CommLedger(), stages=dist.get_world_size() // n)
    pipe, stage = divmod(g.base // n, 2)
    peer = dataclasses.replace(g, base=(2 * pipe + 1 - stage) * n)
    model = window_parallelize(copy.deepcopy(net), g)
    names = list(model.layers)
    dh, dw = (CFG.window_h // 2, CFG.window_w // 2) if fused else (0, 0)
    x, t, cond = _inputs(CFG.n_vars)
    if stage == 0:
        h0, ctx = model.embed_inputs(shard_field(x, g), t, shard_field(cond, g))
        y = model.run_blocks(h0, ctx, names[:SPLIT])
        send_shifted(y.detach(), dh, dw, g, peer)
        y.backward(recv_grad_back(y.shape, y, dh, dw, g, peer))
    else:
        shape = torch.Size((BATCH, layout.tile_h, layout.local_w, CFG.dim))
        xs = recv_shifted(shape, torch.empty(0), dh, dw, g, peer).requires_grad_(True)
        ctx = model.block_context(t, layout.tile_h, xs.device, xs.dtype)
        first = model.layers[names[SPLIT]]
        first.attention.preshifted = fused
        h1 = first(xs, *ctx)
        h1 = halo_roll(h1, dh, dw, -1, g, fine=True) if fused else h1  # back to the unshifted residual stream
        model.head(model.run_blocks(h1, ctx, names[SPLIT + 1:]), ctx).square().sum().backward()
        send_grad_back(xs.grad, dh, dw, g, peer)
    return _all_ledgers(g.ledger)


def _counting(ledger: CommLedger):
    """Wrap the two collectives FSDP2 calls, counting what each rank sends in a ring algorithm."""
    gather, scatter = dist.all_gather_single, dist.reduce_scatter_single

    def all_gather_single(output, input, group=None, async_op=False):
        n = dist.get_world_size(group)
        ledger.record("fsdp.all_gather", (n - 1) * input.numel() * input.element_size(), n - 1)
        return gather(output, input, group=group, async_op=async_op)

    def reduce_scatter_single(output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):
        n = dist.get_world_size(group)
        ledger.record("fsdp.reduce_scatter", (n - 1) * output.numel() * output.element_size(), n - 1)
        return scatter(output, input, op=op, group=group, async_op=async_op)

    return all_gather_single, reduce_scatter_single


def fsdp_step(net: SwinDenoiser, layout: WindowLayout) -> dict:
    """FSDP2 over the replicas of a window layout (each block its own unit, then the root): one
    training step; every rank's ledger and the FSDP units' parameter shapes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dp = dist.get_world_size() // layout.world_size
    mesh = init_device_mesh("cpu", (dp, layout.world_size), mesh_dim_names=("dp", "wp"))
    g = window_group(layout, CommLedger(), stages=dp)
    model = window_parallelize(copy.deepcopy(net), g)
    units = [[list(p.shape) for p in block.parameters()] for block in model.layers.values()]
    in_blocks = {id(p) for block in model.layers.values() for p in block.parameters()}
    root = [list(p.shape) for p in model.parameters() if id(p) not in in_blocks]
    for block in model.layers.values():
        fully_shard(block, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    saved = dist.all_gather_single, dist.reduce_scatter_single
    dist.all_gather_single, dist.reduce_scatter_single = _counting(g.ledger)
    try:
        replica = g.base // layout.world_size
        x, t, cond = _inputs(CFG.n_vars)
        mine = slice(replica * BATCH // dp, (replica + 1) * BATCH // dp)
        model(shard_field(x[mine], g), t[mine], shard_field(cond[mine], g)).square().sum().backward()
    finally:
        dist.all_gather_single, dist.reduce_scatter_single = saved
    return {"ledgers": _all_ledgers(g.ledger), "units": [root] + units, "dp": dp}


def naive_step(net: SwinDenoiser, layout: WindowLayout) -> dict:
    """The bench's naive all-gather baseline and SWiPe on the same step: both ledgers, and how far
    the naive output is from SWiPe's (it must compute the same thing to be a fair baseline)."""
    bench = _bench()
    x, t, cond = _inputs(CFG.n_vars)
    outs, ledgers = [], {}
    for name, wrap in (("ours", window_parallelize), ("naive", bench.naive_parallelize)):
        g = window_group(layout, CommLedger())
        model = wrap(copy.deepcopy(net), g)
        out = model(shard_field(x, g), t, shard_field(cond, g))
        out.square().sum().backward()
        ledgers[name] = _all_ledgers(g.ledger)
        reduce_gradients(model, g)
        outs.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    err = torch.tensor([(outs[0][0] - outs[1][0]).abs().max().item(),
                        max((a - b).abs().max().item() for a, b in zip(outs[0][1], outs[1][1]))])
    dist.all_reduce(err, op=dist.ReduceOp.MAX)
    return {"ledgers": ledgers, "out_err": err[0].item(), "grad_err": err[1].item(),
            "grad_scale": max(p.abs().max().item() for p in outs[0][1])}


def main() -> None:
    specs, out_path = sys.argv[1].split(","), sys.argv[2]
    dist.init_process_group("gloo", init_method=os.environ["SWIPE_INIT"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    net = SwinDenoiser(CFG)
    _randomize(net, seed=13)
    results = {}
    for spec in specs:
        kind, shape = spec.split(":")
        wp_h, wp_w, sp = (int(v) for v in shape.split("x"))
        layout = WindowLayout.for_model(CFG, wp_h=wp_h, wp_w=wp_w, sp=sp)
        if kind == "pp2":
            for fused in (True, False):
                results[f"{spec}/{'fused' if fused else 'plain'}"] = pipeline_step(net, layout, fused)
        elif kind == "fsdp2":
            results[spec] = fsdp_step(net, layout)
        elif kind == "naive":
            results[spec] = naive_step(net, layout)
    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
