"""`auroragpt.timers`: named wall-clock timers for a user's own hot spots, reported across ranks.

    with ag.timers("forward"):
        loss = model(x)

    @ag.timers("data")
    def next_batch(): ...

    ag.print0(ag.timers.report())   # per name: calls, seconds per rank (min / mean / max), ms per call

`report()` gathers every rank's totals (one all-gather of a small dict), so a slow rank shows up
as a max far above the mean. `sync=True` waits for the accelerator at both ends of the timed
region, so asynchronous GPU work is counted where it was issued.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any


class Timer(contextlib.ContextDecorator):
    """One timed region; a context manager and a decorator (reentrant-safe per use)."""

    def __init__(self, owner: "Timers", name: str, sync: bool) -> None:
        self._owner, self.name, self._sync = owner, name, sync
        self._starts: list[float] = []

    def __enter__(self) -> "Timer":
        if self._sync:
            _synchronize()
        self._starts.append(time.perf_counter())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._sync:
            _synchronize()
        self._owner.add(self.name, time.perf_counter() - self._starts.pop())


class Timers:
    """The registry of named timers of this process (`auroragpt.timers`)."""

    def __init__(self) -> None:
        self._totals: dict[str, list[float]] = {}  # name -> [calls, seconds]

    def __call__(self, name: str, *, sync: bool = False) -> Timer:
        return Timer(self, name, sync)

    def add(self, name: str, seconds: float) -> None:
        """Count one call of `name` that took `seconds` (for times measured elsewhere)."""
        entry = self._totals.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def reset(self) -> None:
        self._totals.clear()

    def local(self) -> dict[str, tuple[int, float]]:
        """This rank's (calls, seconds) per name."""
        return {name: (int(calls), seconds) for name, (calls, seconds) in self._totals.items()}

    def stats(self, across_ranks: bool = True) -> dict[str, dict[str, float]]:
        """Per name: calls (on rank 0's count), seconds min/mean/max over the ranks that timed it,
        and ms per call (mean). Collective when `across_ranks` and a group exists: call it on every rank."""
        tables = _gather(self.local()) if across_ranks else [self.local()]
        names = list(dict.fromkeys(n for table in tables for n in table))
        out: dict[str, dict[str, float]] = {}
        for name in names:
            rows = [table[name] for table in tables if name in table]
            seconds = [s for _, s in rows]
            calls = sum(c for c, _ in rows)
            out[name] = {"calls": rows[0][0], "ranks": len(rows), "min_s": min(seconds), "mean_s": sum(seconds) / len(seconds),
                         "max_s": max(seconds), "ms_per_call": 1000 * sum(seconds) / max(calls, 1)}
        return out

    def report(self, across_ranks: bool = True) -> str:
        """A small table of `stats()` (collective: call it on every rank, print it on one)."""
        stats = self.stats(across_ranks)
        if not stats:
            return "timers: nothing timed"
        width = max(len("timer"), *(len(n) for n in stats))
        lines = [f"{'timer':<{width}}  {'calls':>7}  {'ranks':>5}  {'min s':>9}  {'mean s':>9}  {'max s':>9}  {'ms/call':>9}"]
        for name, s in stats.items():
            lines.append(f"{name:<{width}}  {s['calls']:>7}  {s['ranks']:>5}  {s['min_s']:>9.4f}  {s['mean_s']:>9.4f}  "
                         f"{s['max_s']:>9.4f}  {s['ms_per_call']:>9.3f}")
        return "\n".join(lines)


def _gather(local: dict[str, tuple[int, float]]) -> list[dict[str, tuple[int, float]]]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    tables: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(tables, local)
    return tables


def _synchronize() -> None:
    import torch

    for kind in ("cuda", "xpu", "mps"):
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            backend.synchronize()
            return


timers = Timers()
