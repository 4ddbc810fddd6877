"""SWiPe communication and overhead: measured bytes per rank vs the closed-form model vs a naive
all-gather scheme, the CPU step time of window parallelism against one rank, and the paper-scale
estimate of the README.

For each layout (wp_h x wp_w x sp) the script starts that many gloo processes, runs training steps
of a thin weather model on a grid where a tile is many windows wide (default 128 x 256, 8 x 8
windows, 16 channels), then one counted step of SWiPe and one of the naive baseline (all-gather
the whole field before every shifted block, `NaiveGatherAttention`, really run and counted), and
prints both ledgers next to the closed forms (`swipe_step_comm`, `naive_step_bytes`); then the
closed form at 0.25 degrees and the per-tile estimate at AERIS scale, which nothing here can run.

    python bench/swipe.py                      # defaults: 1x2x1,2x2x1,1x4x1,1x2x2, batch 1, 3 timed steps
    python bench/swipe.py --grid 32x64 --dim 64 --heads 4 --vars 4 --batch 2   # the weather-tiny shape
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window import reduce_gradients, shard_field, window_group, window_parallelize
from auroragpt.parallel.window_cost import (AURORA_TILE_LINK_GBPS, AURORA_TILE_PEAK_TFLOPS, naive_step_bytes,
                                            naive_step_comm, swipe_step_comm, tile_estimate)
from auroragpt.parallel.window_layout import WindowLayout
from auroragpt.weather import windows as win
from auroragpt.weather.model import SwinDenoiser, get_weather_preset


class _GatherTiles(torch.autograd.Function):
    """All-gather every rank's [B, Ht, Wt, D] tile into the global field; backward reduce-scatters
    (an all-to-all of the gradient's tiles, summed: what a ring reduce-scatter sends)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        layout, n = group.layout, group.layout.world_size
        parts = [torch.empty_like(local) for _ in range(n)]
        dist.all_gather(parts, local.contiguous())
        group.ledger.record("naive.all_gather", (n - 1) * local.numel() * local.element_size(), n - 1)
        b, _, _, d = local.shape
        full = local.new_empty(b, layout.grid_h, layout.grid_w, d)
        for rank, part in enumerate(parts):
            rows, cols = layout.local_slices(rank)
            full[:, rows, cols] = part
        return full

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        group = ctx.group
        layout, n = group.layout, group.layout.world_size
        chunks = torch.stack([grad[:, rows, cols] for rows, cols in map(layout.local_slices, range(n))])
        got = torch.empty_like(chunks)
        dist.all_to_all_single(got, chunks.contiguous())
        group.ledger.record("naive.reduce_scatter", (n - 1) * chunks[0].numel() * chunks.element_size(), n - 1)
        return got.sum(0), None


class NaiveGatherAttention(torch.nn.Module):
    """The baseline SWiPe is measured against: before every shifted block, all-gather the whole
    D-channel field, run the 1-device shifted window attention on it and keep this rank's tile.
    Unshifted windows lie inside a tile and need nothing. WP only (sp = 1)."""

    def __init__(self, inner: torch.nn.Module, group) -> None:
        super().__init__()
        if group.layout.sp != 1:
            raise ValueError("the naive all-gather baseline is window-parallel only (sp = 1)")
        self.inner, self.group = inner, group
        cfg, layout = inner.cfg, group.layout
        row = win.pole_mask(layout.grid_h, cfg.window_h, cfg.window_h // 2)
        self.register_buffer("full_mask", win.expand_row_mask(row, cfg.window_w), persistent=False)

    def forward(self, x, shifted, rope, mask):
        if not shifted:
            return self.inner(x, False, rope, None)
        full = self.inner(_GatherTiles.apply(x, self.group), True, rope, self.full_mask)
        rows, cols = self.group.layout.local_slices(self.group.rank)
        return full[:, rows, cols]


def naive_parallelize(model: torch.nn.Module, group) -> torch.nn.Module:
    """`window_parallelize`'s counterpart for the naive baseline (in place)."""
    for block in model.layers.values():
        block.attention = NaiveGatherAttention(block.attention, group)
    return model


def bench_config(args):
    """The benchmark's model: a preset with the grid and width overrides of the command line.

    The default is thin (16 channels, 2 heads) on a 128 x 256 grid so that, as at 0.25 degrees, a
    tile at WP = 4 is many windows wide (8 x 16 windows of 8 x 8), and it still runs on a CPU."""
    grid_h, grid_w = (int(v) for v in args.grid.split("x"))
    return get_weather_preset(args.preset, grid_h=grid_h, grid_w=grid_w, dim=args.dim, n_heads=args.heads,
                              ffn_dim=2 * args.dim, n_vars=args.vars, n_cond=args.vars, time_freqs=8)


def _step_inputs(cfg, batch: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.n_vars, cfg.grid_h, cfg.grid_w, generator=gen)
    cond = torch.randn(batch, cfg.n_cond, cfg.grid_h, cfg.grid_w, generator=gen)
    return x, torch.rand(batch, generator=gen), cond


def _model(cfg) -> SwinDenoiser:
    """Random non-zero weights (adaLN-zero would zero the attention's share of the output, and
    with it the check that the naive baseline computes what SWiPe computes)."""
    model = SwinDenoiser(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _time(step, steps: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) of `steps` runs after a warm-up."""
    step()
    wall = cpu = float("inf")
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def _counted_step(model, group, inputs) -> tuple[dict, torch.Tensor]:
    """One forward + backward with a fresh ledger (without the gradient reduction, which is data
    parallelism's and the same for every scheme): the ledger and the output."""
    group.ledger.reset()
    model.zero_grad()
    out = model(*inputs)
    out.square().mean().backward()
    return group.ledger.snapshot(), out.detach()


def worker(args) -> None:
    """One rank: timed training steps under the layout, then one counted step of SWiPe and one of
    the naive baseline (WP only); rank 0 writes ledgers, timing and the naive/ours output gap."""
    dist.init_process_group("gloo", init_method=os.environ["SWIPE_INIT"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    torch.set_num_threads(1)
    cfg = bench_config(args)
    wp_h, wp_w, sp = (int(v) for v in args.layout.split("x"))
    layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
    group = window_group(layout)
    model = window_parallelize(_model(cfg), group)
    inputs = tuple(shard_field(v, group) if v.dim() == 4 else v for v in _step_inputs(cfg, args.batch))

    def step() -> None:
        model.zero_grad()
        model(*inputs).square().mean().backward()
        reduce_gradients(model, group)

    seconds, cpu = _time(step, args.steps) if args.steps else (None, 0.0)
    total_cpu = torch.tensor(cpu)
    dist.all_reduce(total_cpu)  # the layout's CPU work, all ranks together
    ours, out = _counted_step(model, group, inputs)
    result = {"ledger": ours, "seconds": seconds, "cpu_all_ranks": total_cpu.item()}
    if sp == 1:
        naive_group = dataclasses.replace(group, ledger=CommLedger())
        naive, naive_out = _counted_step(naive_parallelize(_model(cfg), naive_group), naive_group, inputs)
        gap = torch.tensor((naive_out - out).abs().max().item())
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        result.update(naive_ledger=naive, naive_output_gap=gap.item())
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def _passthrough(args) -> list[str]:
    return ["--preset", args.preset, "--grid", args.grid, "--dim", str(args.dim), "--heads", str(args.heads),
            "--vars", str(args.vars), "--batch", str(args.batch), "--steps", str(args.steps)]


def run_layout(args, layout: str, tmp: Path) -> dict:
    world = 1
    for v in layout.split("x"):
        world *= int(v)
    out, rendezvous = tmp / f"{layout}.json", tmp / f"{layout}.rdv"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--layout", layout, "--out", str(out),
                               *_passthrough(args)],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world),
                                       SWIPE_INIT=f"file://{rendezvous}", OMP_NUM_THREADS="1"))
             for r in range(world)]
    for proc in procs:
        if proc.wait(timeout=600):
            raise SystemExit(f"layout {layout}: a rank exited with {proc.returncode}")
    return json.loads(out.read_text())


def one_rank_seconds(args) -> tuple[float, float]:
    torch.set_num_threads(1)
    cfg = bench_config(args)
    model = _model(cfg)
    x, t, cond = _step_inputs(cfg, args.batch)

    def step() -> None:
        model.zero_grad()
        model(x, t, cond).square().mean().backward()

    return _time(step, args.steps)


def _comm(snapshot: dict) -> dict:
    return {k: (v["bytes"], v["messages"]) for k, v in snapshot.items() if v["bytes"] or v["messages"]}


def layout_row(args, cfg, spec: str, got: dict, base: tuple[float, float] | None) -> dict:
    """Measured vs closed form for SWiPe and for the naive baseline, printed; the row as a dict."""
    wp_h, wp_w, sp = (int(v) for v in spec.split("x"))
    layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
    model, measured = swipe_step_comm(layout, cfg, args.batch), _comm(got["ledger"])
    ours = sum(b for b, _ in measured.values())
    row = {"measured": measured, "model": model, "equal": measured == model, "bytes": ours,
           "naive_model_bytes": naive_step_bytes(layout, cfg, args.batch), "step_s": got["seconds"],
           "step_over_one_rank": got["seconds"] / base[0] if base and got["seconds"] else None,
           "cpu_over_one_rank": got["cpu_all_ranks"] / base[1] if base and got["seconds"] else None}
    print(f"\nlayout wp_h x wp_w x sp = {spec} (tile {layout.tile_h} x {layout.tile_w} points = "
          f"{layout.tile_h // cfg.window_h} x {layout.tile_w // cfg.window_w} windows): measured == closed form: {row['equal']}")
    print("  " + CommLedger.from_snapshot(got["ledger"]).table(model).replace("\n", "\n  "))
    if "naive_ledger" in got:
        naive = sum(v["bytes"] for v in got["naive_ledger"].values())
        row.update(naive_bytes=naive, naive_over_ours=naive / ours,
                   naive_output_gap=got["naive_output_gap"])
        naive_model = naive_step_comm(layout, cfg, args.batch)
        row["naive_equal"] = _comm(got["naive_ledger"]) == naive_model
        print("  naive all-gather baseline:\n  "
              + CommLedger.from_snapshot(got["naive_ledger"]).table(naive_model).replace("\n", "\n  "))
        print(f"  naive all-gather scheme: measured {naive} B/rank/step, closed form {row['naive_model_bytes']} "
              f"(equal: {row['naive_equal']}); output gap to SWiPe {got['naive_output_gap']:.2e}; "
              f"naive / ours = {naive / ours:.1f}x")
    else:
        print(f"  (no naive baseline with sp > 1; closed form {row['naive_model_bytes']} B)")
    if row["step_over_one_rank"]:
        print(f"  step {got['seconds'] * 1e3:.1f} ms wall = {row['step_over_one_rank']:.2f} x one rank's full-field step; "
              f"CPU time of all ranks {got['cpu_all_ranks'] * 1e3:.1f} ms = {row['cpu_over_one_rank']:.2f} x one rank's")
    return row


def report(args) -> dict:
    cfg = bench_config(args)
    results: dict = {"config": cfg.to_dict(), "batch": args.batch, "layouts": {}}
    base = one_rank_seconds(args) if args.steps else None
    results["one_rank_step_s"] = base
    print(f"model: {args.preset} with grid {cfg.grid_h} x {cfg.grid_w}, windows {cfg.window_h} x {cfg.window_w}, "
          f"dim {cfg.dim}, {cfg.n_layers} blocks, batch {args.batch}, fp32")
    if base:
        print(f"1 rank (1 thread): {base[0] * 1e3:.1f} ms wall, {base[1] * 1e3:.1f} ms CPU per training step")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in filter(None, args.layouts.split(",")):
            results["layouts"][spec] = layout_row(args, cfg, spec, run_layout(args, spec, Path(tmp)), base)
    ratios = {k: round(v["naive_over_ours"], 1) for k, v in results["layouts"].items() if "naive_over_ours" in v}
    print(f"\nmeasured naive all-gather / SWiPe bytes per rank and step: {ratios}")
    results["aeris_scale"] = aeris_scale()
    results["paper_scale"] = paper_scale(args.peak_tflops, args.link_gbps)
    return results


def aeris_scale() -> dict:
    """Closed-form bytes per rank and step at 0.25 degrees, one sample per tile."""
    rows = {}
    print("\nclosed form at 0.25 degrees (720 x 1440, 30 x 30 windows, batch 1, fp32 activations; x0.5 in bf16):")
    for preset, (wp_h, wp_w, sp) in (("weather-1.3b", (1, 2, 1)), ("weather-1.3b", (2, 2, 1)),
                                     ("weather-1.3b", (1, 4, 1)), ("weather-40b", (4, 12, 1)),
                                     ("weather-40b", (4, 12, 4))):
        cfg = get_weather_preset(preset)
        layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
        ours = sum(b for b, _ in swipe_step_comm(layout, cfg, 1).values())
        naive = naive_step_bytes(layout, cfg, 1)
        key = f"{preset} {wp_h}x{wp_w}x{sp}"
        rows[key] = {"bytes": ours, "naive_bytes": naive, "naive_over_ours": naive / ours}
        print(f"  {key:<22} {ours / 2**30:8.2f} GiB/rank/step  naive {naive / 2**30:9.2f} GiB  ({naive / ours:.1f}x)")
    return rows


# (preset, wp_h, wp_w, sp, pp, data-parallel replicas, of which sharded, micro-batches per step):
# every row fills 120,960 tiles (10,080 Aurora nodes x 12), the machine size AERIS reports.
PAPER_SCALE = (("weather-40b", 4, 12, 4, 3, 210, 10, 8), ("weather-40b", 4, 12, 4, 3, 210, 10, 1),
               ("weather-13b", 4, 12, 2, 7, 180, 10, 8), ("weather-1.3b", 4, 12, 1, 1, 2520, 8, 1))


def paper_row(preset: str, wp_h: int, wp_w: int, sp: int, pp: int, replicas: int, dp_shard: int,
              microbatches: int, peak_tflops: float, link_gbps: float) -> tuple[str, dict]:
    """One README row of the paper-scale table (markdown) and the estimate behind it."""
    cfg = get_weather_preset(preset)
    layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
    est = tile_estimate(cfg, layout, pp=pp, dp_shard=dp_shard, peak_tflops=peak_tflops, link_gbps=link_gbps,
                        microbatches=microbatches)
    tiles = layout.world_size * pp * replicas
    est["tiles"] = tiles
    est["machine_eflops"] = est["sustained_tflops"] * tiles / 1e6
    row = (f"| {preset} | {wp_h}x{wp_w}x{sp}, pp {pp} | {replicas} ({dp_shard}) | {microbatches} | {tiles:,} | "
           f"{est['weights_gib']:.1f} | {est['activations_gib']:.1f} | {est['stage_comm_gib']:.2f} | {est['fsdp_gib']:.1f} | "
           f"{est['compute_s']:.2f} + {est['stage_comm_s']:.2f} | {est['step_s']:.1f} | "
           f"{est['sustained_tflops']:.0f} | {est['machine_eflops']:.1f} |")
    return row, est


def paper_scale(peak_tflops: float, link_gbps: float) -> dict:
    """The README's paper-scale table, printed as markdown rows (`window_cost.tile_estimate`)."""
    print(f"\npaper-scale estimate ({peak_tflops:g} TFLOP/s and {link_gbps:.1f} GB/s per tile, bf16 activations, "
          "one sample per micro-batch; README table rows):")
    rows = {}
    for spec in PAPER_SCALE:
        row, est = paper_row(*spec, peak_tflops=peak_tflops, link_gbps=link_gbps)
        print(row)
        rows[row.split("|")[1].strip() + " " + "/".join(map(str, spec[1:]))] = est
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="weather-tiny")
    parser.add_argument("--grid", default="128x256", help="grid_h x grid_w of the benchmark model")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vars", type=int, default=2, help="state (and conditioning) channels")
    parser.add_argument("--layouts", default="1x2x1,2x2x1,1x4x1,1x2x2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per layout (0: bytes only)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--peak-tflops", type=float, default=AURORA_TILE_PEAK_TFLOPS,
                        help="bf16 TFLOP/s per tile for the paper-scale estimate")
    parser.add_argument("--link-gbps", type=float, default=AURORA_TILE_LINK_GBPS,
                        help="GB/s per tile for the paper-scale estimate")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = report(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
