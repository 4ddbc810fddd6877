"""Training throughput: tokens/s, TFLOP/s per device and MFU for a preset and a parallel layout.

On one process it also times a minimal plain-PyTorch loop (model, AdamW, cross-entropy, clipping;
no toolbox code) on the same model and batch shape in the same run, and prints
ratio = plain step time / our step time (>= 0.95 means the toolbox adds no real overhead).
Runs alternate (plain, ours, plain, ours, ...) so a busy machine penalises both alike. Ratios
are printed for each side's fastest step after warm-up (other processes can only add time), the
median wall time, and the median process CPU time per step (the least disturbed by other
processes sharing the cores).

    python bench/train.py --preset tiny --seq-len 256 --batch 8 --steps 30
    auroragpt launch -n 2 -- python bench/train.py --preset tiny --dp-shard 2      (layout only)
    python bench/train.py --preset 1b --seq-len 2048 --batch 4 --bf16 --compile     (one GPU: MFU)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="micro batch per data-parallel rank")
    p.add_argument("--accum", type=int, default=1, help="micro batches per optimizer step")
    p.add_argument("--steps", type=int, default=30, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--activation-checkpointing", default="none", choices=("none", "full", "selective"))
    p.add_argument("--dp-shard", type=int, default=-1)
    p.add_argument("--dp-replicate", type=int, default=1)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--no-baseline", action="store_true", help="skip the plain-PyTorch loop")
    return p.parse_args()


def bench_config(args: argparse.Namespace, run_dir: str, world: int):
    from auroragpt.config import load_config

    dp = world // (args.tp * args.pp)
    overrides = {
        "model.preset": args.preset, "model.max_seq_len": args.seq_len,
        "parallel.dp_shard": args.dp_shard, "parallel.dp_replicate": args.dp_replicate, "parallel.tp": args.tp,
        "parallel.pp": args.pp, "parallel.pp_microbatches": args.pp, "parallel.compile": args.compile,
        "parallel.mixed_precision": "bf16" if args.bf16 else "fp32",
        "parallel.activation_checkpointing": args.activation_checkpointing,
        "data.synthetic": True, "data.seq_len": args.seq_len, "data.micro_batch": args.batch,
        "data.global_batch": args.batch * args.accum * dp, "train.steps": args.warmup + args.steps,
        "train.spike_warmup_steps": 10**9, "optim.warmup_steps": 10, "checkpoint.save_at_end": False,
        "checkpoint.resume": False, "metrics.plots": False, "run.dir": run_dir,
    }
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def ours(args: argparse.Namespace, world: int) -> tuple[list[tuple[float, float]], dict]:
    """(wall, CPU) step times of the real trainer (synthetic data), read back from its metrics.jsonl."""
    from auroragpt.train.metrics import read_lines
    from auroragpt.train.trainer import train

    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:  # only rank 0 writes into its own
        train(bench_config(args, run_dir, world))
        metrics = Path(run_dir) / "metrics.jsonl"
        records = read_lines(metrics) if metrics.exists() else []
    timed = records[args.warmup:]
    return [(r["step_time_s"], r["cpu_time_s"]) for r in timed], (timed[-1] if timed else {})


def plain(args: argparse.Namespace) -> list[tuple[float, float]]:
    """The same model, batch and optimizer written the way a tutorial would: the baseline."""
    import torch

    from auroragpt.runtime.device import detect_device
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    device = torch.device(detect_device())
    cfg = get_preset(args.preset, max_seq_len=args.seq_len)
    with torch.device(device):
        model = GPT(cfg)
    model.init_weights(torch.Generator(device=device).manual_seed(42))
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda" or None)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (args.batch * args.accum, args.seq_len + 1), generator=g).to(device)
    x, y = batch[:, :-1], batch[:, 1:]
    times = []
    for step in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        for xs, ys in zip(x.chunk(args.accum), y.chunk(args.accum)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(xs)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ys.flatten(0, 1))
            (loss / args.accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def main() -> int:
    args = parse_args()
    os.environ.setdefault("AURORAGPT_LOG_LEVEL", "WARNING")
    from auroragpt.runtime.env import read_rank_info

    world = read_rank_info().world_size
    rank = read_rank_info().rank
    baseline = world == 1 and not args.no_baseline
    our_times: list[tuple[float, float]] = []
    plain_times: list[tuple[float, float]] = []
    last: dict = {}
    for _ in range(args.rounds):
        if baseline:
            plain_times += plain(args)
        times, last = ours(args, world)
        our_times += times
    if rank != 0:
        return 0
    ours_s = min(wall for wall, _ in our_times)
    tokens = args.batch * args.accum * (world // (args.tp * args.pp)) * args.seq_len
    from auroragpt.model.presets import get_preset

    cfg = get_preset(args.preset, max_seq_len=args.seq_len)
    tflops = tokens / ours_s * cfg.flops_per_token(args.seq_len) / world / 1e12
    mfu = last.get("mfu")
    print(f"preset {args.preset} ({cfg.num_params() / 1e6:.1f}M params), seq {args.seq_len}, "
          f"{tokens} tokens/step, world {world} (dp_replicate {args.dp_replicate}, dp_shard {args.dp_shard}, "
          f"tp {args.tp}, pp {args.pp}), {'bf16' if args.bf16 else 'fp32'}{', compile' if args.compile else ''}")
    if mfu is not None:  # the trainer's MFU of the last step, rescaled to the fastest step
        mfu *= last["step_time_s"] / ours_s
    med = lambda times, i: statistics.median(t[i] for t in times)  # noqa: E731
    print(f"ours : best {1e3 * ours_s:8.2f} ms/step (median {1e3 * med(our_times, 0):8.2f}, CPU {1e3 * med(our_times, 1):8.2f})  "
          f"{tokens / ours_s:12,.0f} tokens/s  {tflops:8.3f} TFLOP/s/device  "
          f"MFU {'%.1f%%' % (100 * mfu) if mfu is not None else 'n/a (device not in the peak table)'}")
    if baseline:
        plain_s = min(wall for wall, _ in plain_times)
        print(f"plain: best {1e3 * plain_s:8.2f} ms/step (median {1e3 * med(plain_times, 0):8.2f}, CPU {1e3 * med(plain_times, 1):8.2f})  "
              f"{tokens / plain_s:12,.0f} tokens/s")
        print(f"ratio plain/ours: best wall {plain_s / ours_s:.3f}, median wall {med(plain_times, 0) / med(our_times, 0):.3f}, "
              f"median CPU {med(plain_times, 1) / med(our_times, 1):.3f}  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
