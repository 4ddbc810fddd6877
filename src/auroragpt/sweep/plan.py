"""Trials of a sweep: their overrides, stable ids, folders, which are finished, and the job scripts
(PBS arrays, Slurm arrays, a node-split ensemble) that run the rest.

A trial's id is a digest of its fully resolved config (run folder aside), so the same point of the
space keeps its folder across resubmissions and edits of unrelated spec fields.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import shlex
import sys
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.config import Config, load_config, to_toml
from auroragpt.sweep.spec import SweepSpec

RESULT = "result.json"


def override_text(key: str, value: Any) -> str:
    """`section.key=value` as the config loader reads it."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"{key}={text}"


def _draw(rng: random.Random, axis: Any) -> Any:
    if isinstance(axis, list):
        return rng.choice(axis)
    low, high = axis["min"], axis["max"]
    if isinstance(low, int) and isinstance(high, int) and not axis.get("log"):
        return rng.randint(low, high)
    if axis.get("log"):
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return rng.uniform(low, high)


def trial_overrides(spec: SweepSpec) -> list[dict[str, Any]]:
    """Each trial's axis values, in index order (grid: every combination; random: seeded draws).
    Optuna trials are asked for one at a time by the tasks, so they have none here."""
    keys = list(spec.axes)
    if spec.method == "grid":
        return [dict(zip(keys, values)) for values in itertools.product(*(spec.axes[k] for k in keys))]
    if spec.method == "random":
        rng = random.Random(spec.seed)
        return [{k: _draw(rng, spec.axes[k]) for k in keys} for _ in range(spec.trials)]
    return []


def resolve(spec: SweepSpec, values: dict[str, Any]) -> Config:
    """The trial's config: base, then the spec's fixed overrides, then its axis values."""
    items = [override_text(k, v) for k, v in {**spec.overrides, **values}.items()]
    return load_config(spec.base, items)


def trial_id(cfg: Config) -> str:
    """12 hex digits of the resolved config's digest, its run folder and name left out."""
    data = cfg.to_dict()
    data["run"] = {k: v for k, v in data["run"].items() if k not in ("dir", "name")}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trial_dir(spec: SweepSpec, tid: str) -> Path:
    return spec.dir / "trials" / tid


def is_finished(spec: SweepSpec, tid: str) -> bool:
    return (trial_dir(spec, tid) / RESULT).is_file()


def plan(spec: SweepSpec) -> list[dict[str, Any]]:
    """[{index, id, values}] for grid/random; optuna: [{index}] (ids are known once asked)."""
    if spec.method == "optuna":
        return [{"index": i} for i in range(spec.trials)]
    return [{"index": i, "id": trial_id(resolve(spec, values)), "values": values}
            for i, values in enumerate(trial_overrides(spec))]


def pending(spec: SweepSpec) -> list[int]:
    """Indices of the trials without a result yet."""
    if spec.method == "optuna":
        done = {int(p.stem.split("-")[1]) for p in (spec.dir / "optuna").glob("index-*.json")
                if is_finished(spec, json.loads(p.read_text())["id"])}
        return [i for i in range(spec.trials) if i not in done]
    return [t["index"] for t in plan(spec) if not is_finished(spec, t["id"])]


def compress(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (Slurm's --array syntax)."""
    parts = []
    for _, run in itertools.groupby(enumerate(sorted(indices)), key=lambda pair: pair[1] - pair[0]):
        run = [value for _, value in run]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def _task_command(spec: SweepSpec) -> str:
    return shlex.join([sys.executable, "-m", "auroragpt.cli", "sweep", "task", str(spec.path)])


def slurm_script(spec: SweepSpec, indices: list[int], nodes: int) -> str:
    limit = f"%{spec.concurrent}" if spec.concurrent else ""
    return (f"#!/bin/bash\n#SBATCH --job-name=sweep-{spec.dir.name}\n#SBATCH --array={compress(indices)}{limit}\n"
            f"#SBATCH --nodes={nodes}\n#SBATCH --output={spec.dir}/logs/%A_%a.out\n"
            f"# each task runs trial $SLURM_ARRAY_TASK_ID (a finished one is skipped)\n{_task_command(spec)}\n")


def pbs_script(spec: SweepSpec, indices: list[int], nodes: int) -> str:
    # PBS arrays are ranges; finished trials inside the range end at once.
    span = f"{min(indices)}-{max(indices)}" if len(indices) > 1 else f"{indices[0]}-{indices[0] + 1}"
    return (f"#!/bin/bash\n#PBS -N sweep-{spec.dir.name}\n#PBS -J {span}\n#PBS -l select={nodes}\n"
            f"#PBS -o {spec.dir}/logs/\n#PBS -j oe\ncd \"$PBS_O_WORKDIR\"\n"
            f"# each task runs trial $PBS_ARRAY_INDEX (a finished one is skipped)\n{_task_command(spec)}\n")


def ensemble_script(spec: SweepSpec, nodes: int) -> str:
    command = [sys.executable, "-m", "auroragpt.cli", "sweep", "ensemble", str(spec.path), "--nodes-per-trial", str(nodes)]
    return ("#!/bin/bash\n# Inside ONE allocation (PBS or Slurm): split its nodes into groups of "
            f"{nodes} and run the pending trials on them side by side.\n{shlex.join(command)}\n")


def write_scripts(spec: SweepSpec, nodes: int = 1) -> dict[str, Path]:
    """Write plan.json and the job scripts for the pending trials; {} when none is pending."""
    todo = pending(spec)
    write_atomically(spec.dir / "plan.json", json.dumps({"spec": str(spec.path), "trials": plan(spec)}, indent=1, default=str))
    if not todo:
        return {}
    (spec.dir / "logs").mkdir(parents=True, exist_ok=True)
    scripts = {"slurm": slurm_script(spec, todo, nodes), "pbs": pbs_script(spec, todo, nodes),
               "ensemble": ensemble_script(spec, nodes)}
    return {name: write_atomically(spec.dir / f"{name}.sh", text) for name, text in scripts.items()}


def save_trial_config(spec: SweepSpec, cfg: Config, tid: str) -> Path:
    """The trial's own folder with its resolved config; its training run lives in run/."""
    cfg.run.dir = str(trial_dir(spec, tid) / "run")
    cfg.run.name = f"{spec.dir.name}-{tid}"
    return write_atomically(trial_dir(spec, tid) / "config.toml", to_toml(cfg))
