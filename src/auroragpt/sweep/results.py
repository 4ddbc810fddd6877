"""`auroragpt sweep results DIR`: one table of every trial (its differing config values, final and
best metric) and a PNG of their curves, best first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.errors import ConfigError


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every trial folder's result (finished) or status (config written, no result yet)."""
    trials_dir = sweep_dir / "trials"
    if not trials_dir.is_dir():
        raise ConfigError(f"{sweep_dir} holds no trials/ folder: it is not a sweep folder, or no trial ran yet",
                          hint="pass the sweep's dir (the spec's `dir`), after at least one task ran")
    rows = []
    for folder in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        result = folder / "result.json"
        rows.append(json.loads(result.read_text()) if result.is_file() else {"id": folder.name, "values": {}, "final": None,
                                                                              "best": None, "metric": "", "running": True})
    return rows


def table(rows: list[dict[str, Any]], goal: str = "min") -> str:
    """A text table, best trial first; unfinished trials last."""
    keys = sorted({k for r in rows for k in r["values"]})
    sign = 1 if goal == "min" else -1
    rows = sorted(rows, key=lambda r: (r["final"] is None, sign * (r["final"] or 0.0)))
    metric = next((r["metric"] for r in rows if r.get("metric")), "metric")
    header = ["id", *keys, f"final {metric}", f"best {metric}", "steps"]
    body = [[r["id"], *(f"{r['values'].get(k, '')}" for k in keys),
             "running" if r.get("running") else f"{r['final']:.4f}" if r["final"] is not None else "-",
             f"{r['best']:.4f}" if r.get("best") is not None else "-", str(r.get("steps", ""))] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [header, *body])


def plot(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """sweep_dir/results.png: the metric of every finished trial against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auroragpt.train.metrics import read_lines

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        path = sweep_dir / "trials" / r["id"] / "run" / "metrics.jsonl"
        if r.get("running") or not path.is_file():
            continue
        records = [x for x in read_lines(path) if r["metric"] in x]
        label = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in r["values"].items())
        ax.plot([x["step"] for x in records], [x[r["metric"]] for x in records], label=label or r["id"])
    ax.set_xlabel("step")
    ax.set_ylabel(next((r["metric"] for r in rows if r.get("metric")), "metric"))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = sweep_dir / ".results.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, sweep_dir / "results.png")
    return sweep_dir / "results.png"


def report(sweep_dir: str | Path, goal: str = "min") -> str:
    """Write results.txt and results.png into the sweep folder; return the table."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = collect(sweep_dir)
    text = table(rows, goal)
    write_atomically(sweep_dir / "results.txt", text + "\n")
    plot(sweep_dir, rows)
    return text
