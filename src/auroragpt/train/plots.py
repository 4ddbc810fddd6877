"""The one owner of plots: PNG figures (saved atomically) and text plots for terminals without a
display, for the trainer's RUN_DIR/metrics.jsonl and for `auroragpt.History`.

Figures are drawn with matplotlib's object API on the Agg canvas, never through pyplot: no
global backend is switched, no window opens, and matplotlib is imported only when plotting.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.errors import AuroraError

Series = Sequence[float | None]


def _number(value: Any) -> float:
    """A plotted value: strict-JSON nulls (NaN or inf at write time) and gaps become NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def checkpoint_times(run_dir: str | os.PathLike[str]) -> list[float]:
    """Seconds each checkpoint save blocked training, in save order (from metrics.jsonl)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    from auroragpt.train.metrics import read_lines

    return [_number(r["checkpoint_save_s"]) for r in read_lines(path) if r.get("checkpoint_save_s") is not None]


def load_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per step (the last one written wins), in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise AuroraError(f"{path} does not exist", hint="train first; metrics are written as the run goes")
    from auroragpt.train.metrics import read_lines

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
    run_dir = Path(run_dir)
    history = load_history(run_dir)
    steps = [r["step"] for r in history]
    panels = {
        "loss.png": [("loss", "training loss"), ("lr", "learning rate")],
        "throughput.png": [("tokens_per_s", "tokens / s (whole job)"), ("tflops_per_device", "TFLOP/s per device")],
    }
    for name, series in panels.items():
        panels_data = [(label, [_number(r.get(key)) for r in history], None) for key, label in series]
        save_panels(run_dir / name, steps, panels_data)
    summary = summarize(history, checkpoint_times(run_dir))
    write_atomically(run_dir / "summary.txt", summary + "\n")
    return summary


def save_panels(path: str | os.PathLike[str], steps: Sequence[float],
                panels: Sequence[tuple[str, Series, tuple[Series, Series] | None]]) -> Path:
    """One PNG with a panel per (label, values, (lows, highs) or None) over `steps`; the optional
    band shades the spread across ranks. Written atomically; None values are gaps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, max(2.5 * len(panels), 3.5)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, values, band) in zip(axes, panels):
        ax.plot(steps, [_nan(v) for v in values], label=label)
        if band is not None:
            ax.fill_between(steps, [_nan(v) for v in band[0]], [_nan(v) for v in band[1]], alpha=0.25,
                            label="min-max over ranks")
            ax.legend(loc="best", fontsize="small")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return write_atomically(path, buffer.getvalue())


def text_plot(label: str, steps: Sequence[float], values: Series, width: int = 60, height: int = 10) -> str:
    """An ASCII line plot for a terminal without a display: value range on the left, steps below."""
    points = [(s, float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    if not points:
        return f"{label}: no finite value"
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    first, last = points[0][0], points[-1][0]
    grid = [[" "] * width for _ in range(height)]
    for step, value in points:
        col = 0 if last == first else round((step - first) / (last - first) * (width - 1))
        row = 0 if hi == lo else round((hi - value) / (hi - lo) * (height - 1))
        grid[row][col] = "*"
    edge = max(len(f"{hi:.4g}"), len(f"{lo:.4g}"))
    lines = [label]
    for i, row in enumerate(grid):
        tick = f"{hi:.4g}" if i == 0 else f"{lo:.4g}" if i == height - 1 else ""
        lines.append(f"{tick:>{edge}} |{''.join(row)}")
    lines.append(f"{'':>{edge}} +{'-' * width}")
    footer = f"step {first:g}"
    lines.append(f"{'':>{edge}}  {footer}{f'step {last:g}':>{width - len(footer)}}")
    return "\n".join(lines)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
