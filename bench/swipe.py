"""SWiPe communication and overhead: measured bytes per rank vs the closed-form model vs a naive
all-gather scheme, and the CPU step time of window parallelism against one rank.

For each layout (wp_h x wp_w x sp) the script starts that many gloo processes, runs training steps
of the weather model (forward + backward on a random field) and prints the `CommLedger` table of
rank 0 next to `swipe_step_comm` (they must be equal) and `naive_step_bytes`; then the closed-form
figures at AERIS scale (720 x 1440, 30 x 30 windows), which nothing here can run.

    python bench/swipe.py --preset weather-tiny --layouts 1x2x1,2x2x1,1x4x1,1x2x2 --batch 2 --steps 3
"""

from __future__ import annotations

import argparse
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
from auroragpt.parallel.window_cost import naive_step_bytes, swipe_step_comm, tile_estimate
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


def _step_inputs(cfg, batch: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.n_vars, cfg.grid_h, cfg.grid_w, generator=gen)
    cond = torch.randn(batch, cfg.n_cond, cfg.grid_h, cfg.grid_w, generator=gen)
    return x, torch.rand(batch, generator=gen), cond


def _model(cfg) -> SwinDenoiser:
    model = SwinDenoiser(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def _time(step, steps: int) -> float:
    step()  # warm-up
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def worker(args) -> None:
    """One rank: a few training steps under the layout; rank 0 writes ledger and timing."""
    dist.init_process_group("gloo", init_method=os.environ["SWIPE_INIT"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    cfg = get_weather_preset(args.preset)
    wp_h, wp_w, sp = (int(v) for v in args.layout.split("x"))
    group = window_group(WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp))
    model = window_parallelize(_model(cfg), group)
    x, t, cond = (shard_field(v, group) if v.dim() == 4 else v for v in _step_inputs(cfg, args.batch))

    def step() -> None:
        model.zero_grad()
        model(x, t, cond).square().mean().backward()
        reduce_gradients(model, group)

    seconds = _time(step, args.steps)
    group.ledger.reset()
    model.zero_grad()
    model(x, t, cond).square().mean().backward()  # one step, counted (without the gradient reduction)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({"ledger": group.ledger.snapshot(), "seconds": seconds}))
    dist.barrier()
    dist.destroy_process_group()


def run_layout(args, layout: str, tmp: Path) -> dict:
    world = 1
    for v in layout.split("x"):
        world *= int(v)
    out, rendezvous = tmp / f"{layout}.json", tmp / f"{layout}.rdv"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--layout", layout, "--out", str(out),
                               "--preset", args.preset, "--batch", str(args.batch), "--steps", str(args.steps)],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world),
                                       SWIPE_INIT=f"file://{rendezvous}", OMP_NUM_THREADS="1"))
             for r in range(world)]
    for proc in procs:
        if proc.wait(timeout=600):
            raise SystemExit(f"layout {layout}: a rank exited with {proc.returncode}")
    return json.loads(out.read_text())


def one_rank_seconds(args) -> float:
    torch.set_num_threads(1)
    cfg = get_weather_preset(args.preset)
    model = _model(cfg)
    x, t, cond = _step_inputs(cfg, args.batch)

    def step() -> None:
        model.zero_grad()
        model(x, t, cond).square().mean().backward()

    return _time(step, args.steps)


def report(args) -> dict:
    cfg = get_weather_preset(args.preset)
    results: dict = {"preset": args.preset, "batch": args.batch, "layouts": {}}
    base = one_rank_seconds(args)
    results["one_rank_step_s"] = base
    print(f"1 rank (1 thread): {base * 1e3:.1f} ms per training step of {args.preset}, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.layouts.split(","):
            wp_h, wp_w, sp = (int(v) for v in spec.split("x"))
            layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
            got = run_layout(args, spec, Path(tmp))
            model = swipe_step_comm(layout, cfg, args.batch)
            measured = {k: (v["bytes"], v["messages"]) for k, v in got["ledger"].items() if v["bytes"] or v["messages"]}
            ours = sum(b for b, _ in measured.values())
            naive = naive_step_bytes(layout, cfg, args.batch)
            row = {"measured": measured, "model": model, "equal": measured == model, "bytes": ours,
                   "naive_bytes": naive, "naive_over_ours": naive / ours if ours else None,
                   "step_s": got["seconds"], "step_over_one_rank": got["seconds"] / base}
            results["layouts"][spec] = row
            print(f"\nlayout wp_h x wp_w x sp = {spec}: measured == closed form: {row['equal']}")
            for kind in sorted(set(measured) | set(model)):
                print(f"  {kind:<18} measured {measured.get(kind)}  model {model.get(kind)}")
            ratio = f"{naive / ours:.1f}x" if ours else "n/a"
            print(f"  per rank per step: {ours} B (naive all-gather {naive} B, {ratio} more); "
                  f"step {got['seconds'] * 1e3:.1f} ms = {got['seconds'] / base:.2f} x one rank's full-field step")
    results["aeris_scale"] = aeris_scale()
    results["tile_estimates"] = tile_estimates(args)
    return results


def tile_estimates(args) -> dict:
    """Per-tile memory / traffic / step time at 0.25 degrees under stated assumptions (`tile_estimate`)."""
    print(f"\nper-tile estimate (assumed {args.peak_tflops} TFLOP/s peak, {args.link_gbps} GB/s link per tile, "
          "bf16 activations, batch 1 per model replica):")
    rows = {}
    # 40b: 48 x 4 x 3 = 576 tiles per replica x 210 data-parallel replicas (10-way sharded) = 120,960 tiles
    for preset, (wp_h, wp_w, sp, pp, dp_shard) in (("weather-40b", (4, 12, 4, 3, 10)),
                                                  ("weather-13b", (4, 12, 2, 7, 8)),
                                                  ("weather-1.3b", (4, 12, 1, 1, 8))):
        cfg = get_weather_preset(preset)
        layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
        est = tile_estimate(cfg, layout, pp=pp, dp_shard=dp_shard, peak_tflops=args.peak_tflops,
                            link_gbps=args.link_gbps)
        key = f"{preset} wp {wp_h}x{wp_w} sp {sp} pp {pp} dp_shard {dp_shard} ({layout.world_size * pp} tiles/replica)"
        rows[key] = est
        print(f"  {key}: weights+optimizer {est['weights_gib']:.1f} GiB, activations {est['activations_gib']:.1f} GiB, "
              f"SWiPe traffic {est['comm_gib']:.2f} GiB, compute {est['compute_s']:.2f} s + comm {est['comm_s']:.2f} s")
    return rows


def aeris_scale() -> dict:
    """Closed-form bytes per rank and step at 0.25 degrees, one sample per tile."""
    rows = {}
    print("\nclosed form at AERIS scale (720 x 1440, 30 x 30 windows, batch 1, fp32 activations -> x0.5 in bf16):")
    for preset, (wp_h, wp_w, sp) in (("weather-1.3b", (2, 2, 1)), ("weather-1.3b", (1, 4, 1)),
                                     ("weather-40b", (4, 12, 1)), ("weather-40b", (4, 12, 4))):
        cfg = get_weather_preset(preset)
        layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
        ours = sum(b for b, _ in swipe_step_comm(layout, cfg, 1).values())
        naive = naive_step_bytes(layout, cfg, 1)
        key = f"{preset} {wp_h}x{wp_w}x{sp}"
        rows[key] = {"bytes": ours, "naive_bytes": naive, "naive_over_ours": naive / ours}
        print(f"  {key:<22} {ours / 2**30:8.2f} GiB/rank/step  naive {naive / 2**30:9.2f} GiB  ({naive / ours:.1f}x)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="weather-tiny")
    parser.add_argument("--layouts", default="1x2x1,2x2x1,1x4x1,1x2x2")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--peak-tflops", type=float, default=200.0, help="assumed bf16 peak per tile (estimate only)")
    parser.add_argument("--link-gbps", type=float, default=25.0, help="assumed GB/s per tile (estimate only)")
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
