"""Swin block throughput: our windowed attention (scaled_dot_product_attention on windows, pole
mask only on shifted blocks) against a plain PyTorch implementation of the same windowed
attention (explicit q k^T, additive -inf mask, softmax, @ v), in the same run, forward + backward.

Prints grid points x samples per second for both, ratio = ours / plain (>= 0.95: no overhead),
and the model FLOPs per training step from `WeatherModelConfig.flops_per_step`, the formula the
trainer's MFU report uses. Rounds alternate (plain, ours, ...) and the fastest step of each side
counts, so a busy machine penalises both alike.

    python bench/weather.py --preset weather-tiny --batch 8 --steps 10
    python bench/weather.py --preset weather-small --grid 64x128 --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from auroragpt.weather import windows as win
from auroragpt.weather.diffusion import TrigFlowTraining
from auroragpt.weather.model import get_weather_preset

OURS = win.window_attention


def plain_window_attention(q, k, v, mask):
    """The textbook version: materialised scores, additive mask, softmax."""
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    if mask is not None:
        nh, n = mask.shape[0], mask.shape[-1]
        scores = scores.masked_fill(~mask.view(1, nh, 1, 1, n, n), float("-inf"))
    return scores.softmax(dim=-1) @ v


def time_steps(model, batch, steps: int, warmup: int, device) -> float:
    best = float("inf")
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(batch).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="weather-tiny")
    p.add_argument("--grid", default="32x64")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    h, w = (int(x) for x in args.grid.split("x"))
    device = torch.device(args.device)
    cfg = get_weather_preset(args.preset, grid_h=h, grid_w=w)
    model = TrigFlowTraining(cfg).to(device)
    model.init_weights()
    batch = torch.randn(args.batch, cfg.n_vars + cfg.n_cond + 1, h, w, device=device)
    best = {"plain": float("inf"), "ours": float("inf")}
    for _ in range(args.rounds):
        for name, fn in (("plain", plain_window_attention), ("ours", OURS)):
            win.window_attention = fn
            best[name] = min(best[name], time_steps(model, batch, args.steps, args.warmup, device))
    win.window_attention = OURS
    points = args.batch * h * w
    flops = cfg.flops_per_step(args.batch)
    result = {"preset": args.preset, "grid": args.grid, "batch": args.batch, "device": str(device),
              "params": cfg.num_params(), "flops_per_step": flops,
              "points_per_s_ours": points / best["ours"], "points_per_s_plain": points / best["plain"],
              "ratio": best["plain"] / best["ours"], "tflops_ours": flops / best["ours"] / 1e12}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
