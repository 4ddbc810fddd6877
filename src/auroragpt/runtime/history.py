"""`auroragpt.History`: scalars per step from a user's own loop, as JSON lines, a summary and plots.

    history = ag.History("out/history", reduce=True)
    for step in ...:
        history.update(step=step, loss=loss)      # loss: tensor or number
        ag.print0(history.line())
    history.finalize()                             # PNG per metric, text plots, summary

With `reduce`, each value becomes the mean over ranks and NAME_min / NAME_max record the spread
(one collective per update). Rank 0 alone writes NAME.jsonl (strict JSON: NaN and infinities are
written as null), the PNGs and NAME.txt; every rank can read `records` and `summary()`.
Nothing is imported or read at import time; matplotlib only when plots are drawn.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.errors import ConfigError

SPREAD = ("_min", "_max")


class History:
    """Per-step scalars of a run; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str] = "history", *, name: str = "history", reduce: bool = False) -> None:
        self.dir = Path(path)
        self.name = name
        self.reduce = reduce
        self.records: list[dict[str, Any]] = []
        self._started = False

    @property
    def jsonl_path(self) -> Path:
        return self.dir / f"{self.name}.jsonl"

    def update(self, step: int | None = None, *, reduce: bool | None = None, **metrics: Any) -> dict[str, Any]:
        """Record one step's scalars (tensors, numpy or python numbers); returns the record."""
        values = {key: _scalar(key, value) for key, value in metrics.items()}
        if self.reduce if reduce is None else reduce:
            values = _reduce_over_ranks(values)
        record = {"step": len(self.records) + 1 if step is None else int(step), **values}
        self.records.append(record)
        if _is_rank_zero():
            self._append(record)
        return record

    def line(self, record: dict[str, Any] | None = None) -> str:
        """One line for the log: `step 12  loss 0.4213 [0.41, 0.43]  lr 0.001`."""
        record = record if record is not None else (self.records[-1] if self.records else {"step": 0})
        parts = [f"step {record['step']}"]
        for key in self.metric_names():
            if key not in record:
                continue
            text = f"{key} {_fmt(record[key])}"
            if f"{key}_min" in record:
                text += f" [{_fmt(record[key + '_min'])}, {_fmt(record[key + '_max'])}]"
            parts.append(text)
        return "  ".join(parts)

    def metric_names(self) -> list[str]:
        """Recorded metrics in first-seen order, without the _min/_max companions."""
        names: dict[str, None] = {}
        for record in self.records:
            for key in record:
                if key != "step" and not any(key.endswith(s) and key[: -len(s)] in record for s in SPREAD):
                    names[key] = None
        return list(names)

    def summary(self) -> str:
        """Per metric over the steps recorded: last, min, max and mean (finite values only)."""
        if not self.records:
            return f"{self.name}: no steps recorded"
        lines = [f"{self.name}: {len(self.records)} step(s), last step {self.records[-1]['step']}"]
        for key in self.metric_names():
            finite = [r[key] for r in self.records if isinstance(r.get(key), float) and math.isfinite(r[key])]
            if not finite:
                lines.append(f"  {key}: no finite value")
                continue
            lines.append(f"  {key}: last {_fmt(finite[-1])}  min {_fmt(min(finite))}  max {_fmt(max(finite))}  "
                         f"mean {_fmt(sum(finite) / len(finite))}  ({len(finite)} finite of {len(self.records)})")
        return "\n".join(lines)

    def finalize(self, plot: bool = True) -> str:
        """Rank 0 writes NAME.txt (summary and text plots) and, with `plot`, NAME_METRIC.png per
        metric, all atomically. Returns the summary (on every rank)."""
        summary = self.summary()
        if not _is_rank_zero() or not self.records:
            return summary
        from auroragpt.train.plots import save_panels, text_plot

        steps = [r["step"] for r in self.records]
        texts = [summary]
        for key in self.metric_names():
            values = [r.get(key) for r in self.records]
            texts.append(text_plot(key, steps, values))
            if plot:
                band = None
                if any(f"{key}_min" in r for r in self.records):
                    band = ([r.get(f"{key}_min") for r in self.records], [r.get(f"{key}_max") for r in self.records])
                save_panels(self.dir / f"{self.name}_{_safe(key)}.png", steps, [(key, values, band)])
        write_atomically(self.dir / f"{self.name}.txt", "\n\n".join(texts) + "\n")
        return summary

    def _append(self, record: dict[str, Any]) -> None:
        # The first write of this History starts the file afresh: a rerun never mixes two runs.
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({k: _strict(v) for k, v in record.items()}, allow_nan=False)
        with open(self.jsonl_path, "a" if self._started else "w", encoding="utf-8") as out:
            out.write(line + "\n")
        self._started = True


def _scalar(key: str, value: Any) -> float:
    if hasattr(value, "numel") and hasattr(value, "item"):  # torch tensor or numpy array
        if value.numel() != 1:
            raise ConfigError(f"History.update: {key} has {value.numel()} elements, not one",
                              hint=f"pass a scalar, e.g. {key}={key}.mean()")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"History.update: {key} = {value!r} is not a number",
                          hint="record numbers or one-element tensors") from None


def _reduce_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Mean, min and max of every value over the ranks, in one all-gather."""
    import torch
    import torch.distributed as dist

    from auroragpt.runtime.api import collective_device, info

    info("History.update(reduce=True)")
    names = sorted(values)  # every rank must send the same vector
    local = torch.tensor([values[n] for n in names], dtype=torch.float64, device=collective_device())
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    table = torch.stack(gathered).cpu()
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        column = table[:, i]
        out[name] = column.mean().item()
        out[f"{name}_min"], out[f"{name}_max"] = column.min().item(), column.max().item()
    return out


def _is_rank_zero() -> bool:
    from auroragpt.runtime.api import rank

    return rank() == 0


def _strict(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
