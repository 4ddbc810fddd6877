"""PNG plots of a run's loss and throughput, and a short text summary, from RUN_DIR/metrics.jsonl."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from auroragpt.errors import AuroraError
from auroragpt.train.metrics import read_lines


def _number(value: Any) -> float:
    """A plotted value: strict-JSON nulls (NaN or inf at write time) and gaps become NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def checkpoint_times(run_dir: str | os.PathLike[str]) -> list[float]:
    """Seconds each checkpoint save blocked training, in save order (from metrics.jsonl)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [_number(r["checkpoint_save_s"]) for r in read_lines(path) if r.get("checkpoint_save_s") is not None]


def load_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per step (the last one written wins), in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise AuroraError(f"{path} does not exist", hint="train first; metrics are written as the run goes")
    by_step = {r["step"]: r for r in read_lines(path) if "step" in r}
    return [by_step[s] for s in sorted(by_step)]


def summarize(history: list[dict[str, Any]], save_times: list[float] | None = None) -> str:
    """A few lines: steps, tokens, first/last/min loss, median throughput, MFU, skipped steps."""
    if not history:
        return "no steps recorded yet"
    losses = [r["loss"] for r in history if math.isfinite(_number(r.get("loss")))]
    # The first steps include warm-up (allocation, compilation); the median of the rest is honest.
    steady = history[len(history) // 5:] or history
    timed = [r for r in steady if "tokens_per_s" in r] or [r for r in history if "tokens_per_s" in r]
    tps = sorted(r["tokens_per_s"] for r in timed)
    tflops = sorted(r["tflops_per_device"] for r in timed)
    mfus = sorted(r["mfu"] for r in steady if r.get("mfu") is not None)
    last = history[-1]
    lines = [
        f"steps: {last['step']}  tokens: {last['tokens']:,}  skipped steps: {last.get('skipped_steps', 0)}",
        f"loss: first {losses[0]:.4f}  last {losses[-1]:.4f}  min {min(losses):.4f}" if losses else "loss: no finite value",
        (f"throughput (median after warm-up): {tps[len(tps) // 2]:,.0f} tokens/s, "
         f"{tflops[len(tflops) // 2]:.3f} TFLOP/s per device") if tps else "throughput: no timed step",
        f"MFU (median): {100 * mfus[len(mfus) // 2]:.1f}%" if mfus else "MFU: not reported (device not in the peak-FLOPS table)",
        f"peak memory: {max(r.get('memory_gib', 0.0) for r in history):.2f} GiB",
    ]
    if save_times:
        lines.append(f"checkpoints: {len(save_times)} saved, {sorted(save_times)[len(save_times) // 2]:.2f} s median, "
                     f"{max(save_times):.2f} s longest (time training waited)")
    if last.get("stopped"):
        lines.append(f"stopped: {last['stopped']}")
    return "\n".join(lines)


def write_plots(run_dir: str | os.PathLike[str]) -> str:
    """Write RUN_DIR/loss.png, throughput.png and summary.txt (atomically); return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    history = load_history(run_dir)
    steps = [r["step"] for r in history]
    panels = {
        "loss.png": [("loss", "training loss"), ("lr", "learning rate")],
        "throughput.png": [("tokens_per_s", "tokens / s (whole job)"), ("tflops_per_device", "TFLOP/s per device")],
    }
    for name, series in panels.items():
        fig, axes = plt.subplots(len(series), 1, figsize=(7, 5), sharex=True)
        for ax, (key, label) in zip(axes, series):
            ax.plot(steps, [_number(r.get(key)) for r in history])
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("step")
        fig.tight_layout()
        tmp = run_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, run_dir / name)
    summary = summarize(history, checkpoint_times(run_dir))
    tmp = run_dir / ".summary.txt.tmp"
    tmp.write_text(summary + "\n")
    os.replace(tmp, run_dir / "summary.txt")
    return summary
