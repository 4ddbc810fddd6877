"""One rank of a SWiPe equivalence run: window/sequence-parallel vs the 1-rank weather model, fp32.

Started N times by test_swipe.py with RANK / WORLD_SIZE / SWIPE_INIT (a file:// rendezvous).
argv: comma-separated layouts "wp_h x wp_w x sp" (e.g. "1x2x1,2x1x1"), output JSON path. Every
rank also computes the 1-rank reference itself (same seeds), compares its part of the output and
of the input gradient, and the summed parameter gradients; rank 0 writes the worst differences.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys

import torch
import torch.distributed as dist

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window import field_noise, reduce_gradients, shard_field, window_group, window_parallelize
from auroragpt.parallel.window_comm import halo_roll
from auroragpt.parallel.window_pipeline import recv_grad_back, recv_shifted, send_grad_back, send_shifted
from auroragpt.parallel.window_layout import WindowLayout
from auroragpt.weather import windows as win
from auroragpt.weather.diffusion import TrigFlowTraining
from auroragpt.weather.model import SwinBlock, SwinDenoiser, WeatherModelConfig

CFG = WeatherModelConfig(dim=32, n_layers=4, n_heads=4, ffn_dim=64, window_h=8, window_w=8, grid_h=32, grid_w=64,
                         n_vars=2, n_cond=3, time_freqs=8)
BATCH = 2


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-zero weights everywhere (adaLN-zero would hide the attention's gradients)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


class _BlockNet(torch.nn.Module):
    """One Swin block on a [B, C, H, W] field, so block and model share the comparison code."""

    def __init__(self, shifted: bool) -> None:
        super().__init__()
        self.cfg = CFG
        self.layers = torch.nn.ModuleDict({"0": SwinBlock(CFG, shifted=shifted)})

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        c = torch.sin(t[:, None] * torch.arange(1, CFG.dim + 1))  # per sample, like the time embedding
        rope = win.rope_tables(CFG.window_h, CFG.window_w, CFG.head_dim, CFG.rope_theta)
        row = win.pole_mask(x.shape[1], CFG.window_h, CFG.window_h // 2)
        mask = win.expand_row_mask(row, CFG.window_w)
        return self.layers["0"](x, c, rope, mask).permute(0, 3, 1, 2)


def _inputs(width: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, width, CFG.grid_h, CFG.grid_w, generator=gen)
    t = torch.rand(BATCH, generator=gen) + 0.1
    cond = torch.randn(BATCH, CFG.n_cond, CFG.grid_h, CFG.grid_w, generator=gen)
    return x, t, cond


def _run(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, weight: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = model(x, t, cond)
    (out * weight).sum().backward()
    return out.detach(), x.grad


def compare(name: str, reference: torch.nn.Module, layout: WindowLayout, group) -> dict:
    width = CFG.n_vars if name == "model" else CFG.dim
    x, t, cond = _inputs(width)
    ref_out, ref_xgrad = _run(reference, x, t, cond, torch.ones(1))
    weight = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(2))
    reference.zero_grad()
    ref_out, ref_xgrad = _run(reference, x, t, cond, weight)
    model = window_parallelize(copy.deepcopy(reference), group)
    model.zero_grad()
    group.ledger.reset()
    out, xgrad = _run(model, shard_field(x, group), t, shard_field(cond, group), shard_field(weight, group))
    ledger = group.ledger.snapshot()
    reduce_gradients(model, group)
    errs = torch.tensor([
        (out - shard_field(ref_out, group)).abs().max().item(),
        (xgrad - shard_field(ref_xgrad, group)).abs().max().item(),
        max((p.grad - r.grad).abs().max().item() for p, r in zip(model.parameters(), reference.parameters())),
    ])
    dist.all_reduce(errs, op=dist.ReduceOp.MAX)
    # relative to the largest value compared (parameter gradients sum over the whole field)
    scales = [ref_out.abs().max().item(), ref_xgrad.abs().max().item(),
              max(r.grad.abs().max().item() for r in reference.parameters())]
    return {"out": errs[0].item(), "xgrad": errs[1].item(), "pgrad": errs[2].item(),
            "scale": {k: max(v, 1.0) for k, v in zip(("out", "xgrad", "pgrad"), scales)}, "ledger": ledger}


def compare_pp(reference: SwinDenoiser, layout: WindowLayout, fused: bool) -> dict:
    """2 pipeline stages (block 0 | blocks 1-3, block 1 shifted) x the layout; fused or plain send."""
    g = window_group(layout, CommLedger(), stages=2)
    stage = g.base // layout.world_size
    peer = dataclasses.replace(g, base=(1 - stage) * layout.world_size)
    x, t, cond = _inputs(CFG.n_vars)
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    reference.zero_grad()
    ref_out, ref_xgrad = _run(reference, x, t, cond, weight)
    model = window_parallelize(copy.deepcopy(reference), g)
    model.zero_grad()
    names, split = list(model.layers), 1
    dh, dw = (CFG.window_h // 2, CFG.window_w // 2) if fused else (0, 0)
    errs = torch.zeros(3)
    if stage == 0:
        xl = shard_field(x, g).requires_grad_(True)
        h0, ctx = model.embed_inputs(xl, t, shard_field(cond, g))
        y = model.run_blocks(h0, ctx, names[:split])
        send_shifted(y.detach(), dh, dw, g, peer)
        y.backward(recv_grad_back(y.shape, y, dh, dw, g, peer))
        errs[1] = (xl.grad - shard_field(ref_xgrad, g)).abs().max()
    else:
        shape = torch.Size((BATCH, layout.tile_h, layout.local_w, CFG.dim))
        xs = recv_shifted(shape, torch.empty(0), dh, dw, g, peer).requires_grad_(True)
        ctx = model.block_context(t, layout.tile_h, xs.device, xs.dtype)
        first = model.layers[names[split]]
        first.attention.preshifted = fused
        h1 = first(xs, *ctx)
        h1 = halo_roll(h1, dh, dw, -1, g, fine=True) if fused else h1  # back to the unshifted residual stream
        out = model.head(model.run_blocks(h1, ctx, names[split + 1:]), ctx)
        (out * shard_field(weight, g)).sum().backward()
        send_grad_back(xs.grad, dh, dw, g, peer)
        errs[0] = (out.detach() - shard_field(ref_out, g)).abs().max()
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])
    dist.all_reduce(grads)
    ref_grads = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    errs[2] = (grads - ref_grads).abs().max()
    dist.all_reduce(errs, op=dist.ReduceOp.MAX)
    counts = torch.tensor([g.ledger.total_messages(), sum(g.ledger.calls.values()), g.ledger.total_bytes()])
    dist.all_reduce(counts)
    scales = [ref_out.abs().max().item(), ref_xgrad.abs().max().item(), ref_grads.abs().max().item()]
    return {"out": errs[0].item(), "xgrad": errs[1].item(), "pgrad": errs[2].item(),
            "scale": {k: max(v, 1.0) for k, v in zip(("out", "xgrad", "pgrad"), scales)},
            "messages": int(counts[0]), "rounds": int(counts[1]), "bytes": int(counts[2])}


def compare_fsdp(reference: SwinDenoiser, layout: WindowLayout) -> dict:
    """FSDP2 over 2 data-parallel replicas outside the window layout: each replica one sample."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dp = dist.get_world_size() // layout.world_size
    mesh = init_device_mesh("cpu", (dp, layout.world_size), mesh_dim_names=("dp", "wp"))
    g = window_group(layout, CommLedger(), stages=dp)  # replica k holds ranks [k * n, (k + 1) * n)
    replica = g.base // layout.world_size
    x, t, cond = _inputs(CFG.n_vars)
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    reference.zero_grad()
    ref_out, _ = _run(reference, x, t, cond, weight)
    model = window_parallelize(copy.deepcopy(reference), g)
    fully_shard(model, mesh=mesh["dp"])
    mine = slice(replica * BATCH // dp, (replica + 1) * BATCH // dp)
    out = model(shard_field(x[mine], g), t[mine], shard_field(cond[mine], g))
    (out * shard_field(weight[mine], g) * dp).sum().backward()  # FSDP2 averages over dp; the loss is a sum
    out_err = (out.detach() - shard_field(ref_out[mine], g)).abs().max()
    err, scale = 0.0, 1.0
    for p, r in zip(model.parameters(), reference.parameters()):
        local = p.grad.to_local()
        dist.all_reduce(local, group=mesh["wp"].get_group())  # the window layout's partial sums
        err = max(err, (p.grad.full_tensor() - r.grad).abs().max().item())
        scale = max(scale, r.grad.abs().max().item())
    errs = torch.tensor([out_err.item(), err])
    dist.all_reduce(errs, op=dist.ReduceOp.MAX)
    return {"out": errs[0].item(), "xgrad": 0.0, "pgrad": errs[1].item(),
            "scale": {"out": max(ref_out.abs().max().item(), 1.0), "xgrad": 1.0, "pgrad": scale}}


def train_losses(layout: WindowLayout | None, group=None, steps: int = 5) -> list[float]:
    """5 AdamW steps of the TrigFlow objective on a fixed batch; 1 device when layout is None."""
    gen = torch.Generator().manual_seed(3)
    batch = torch.randn(BATCH, CFG.n_vars + CFG.n_cond + 1, CFG.grid_h, CFG.grid_w, generator=gen)
    batch[:, -1] = batch[:, -1].abs()  # the latitude weight
    model = TrigFlowTraining(CFG)
    model.init_weights(torch.Generator().manual_seed(0))
    if layout is not None:
        window_parallelize(model, group)
        model.noise_like = field_noise(group)
        batch = shard_field(batch, group)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(7)  # the noise: the same stream on every rank and on 1 device
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        n = 1 if layout is None else layout.world_size
        loss = model(batch).mean() / n  # equal parts: the global mean is the sum of part means / n
        loss.backward()
        if layout is not None:
            reduce_gradients(model, group)
            dist.all_reduce(loss := loss.detach().clone())
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    layouts, out_path = sys.argv[1].split(","), sys.argv[2]
    dist.init_process_group("gloo", init_method=os.environ["SWIPE_INIT"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    torch.manual_seed(0)
    results = {}
    for spec in layouts:
        if spec.startswith("fsdp2:"):  # "fsdp2:1x2x1": FSDP2 over 2 replicas of that layout
            wp_h, wp_w, sp = (int(v) for v in spec[6:].split("x"))
            net = SwinDenoiser(CFG)
            _randomize(net, seed=14)
            results[f"{spec}/model"] = compare_fsdp(net, WindowLayout.for_model(CFG, wp_h=wp_h, wp_w=wp_w, sp=sp))
            continue
        if spec.startswith("pp2:"):  # "pp2:1x2x1": two pipeline stages of that layout, fused and plain
            wp_h, wp_w, sp = (int(v) for v in spec[4:].split("x"))
            layout = WindowLayout.for_model(CFG, wp_h=wp_h, wp_w=wp_w, sp=sp)
            net = SwinDenoiser(CFG)
            _randomize(net, seed=13)
            for fused in (True, False):
                results[f"{spec}/{'fused' if fused else 'plain'}"] = compare_pp(net, layout, fused)
            continue
        wp_h, wp_w, sp = (int(v) for v in spec.split("x"))
        layout = WindowLayout.for_model(CFG, wp_h=wp_h, wp_w=wp_w, sp=sp)
        group = window_group(layout)
        nets = {"block_unshifted": _BlockNet(False), "block_shifted": _BlockNet(True), "model": SwinDenoiser(CFG)}
        for i, (name, net) in enumerate(nets.items()):
            _randomize(net, seed=10 + i)
            results[f"{spec}/{name}"] = compare(name, net, layout, group)
        results[f"{spec}/train"] = {"losses": train_losses(layout, group), "reference": train_losses(None)}
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
