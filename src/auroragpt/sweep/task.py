"""One array task: find its trial (PBS_ARRAY_INDEX / SLURM_ARRAY_TASK_ID), train it unless it is
finished, and record its result. Optuna tasks ask a study kept in a journal file next to the
trials (no database server; the journal's file lock makes concurrent tasks draw distinct trials).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.errors import ConfigError
from auroragpt.sweep.plan import RESULT, is_finished, plan, resolve, save_trial_config, trial_dir, trial_id
from auroragpt.sweep.spec import SweepSpec

INDEX_VARIABLES = ("PBS_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID")


def array_index(env: Mapping[str, str] | None = None) -> int:
    """This task's index, from the scheduler's array variable."""
    env = os.environ if env is None else env
    for name in INDEX_VARIABLES:
        value = env.get(name)
        if value is not None:
            if not value.strip().isdigit():
                raise ConfigError(f"{name}={value!r} is not an array index", hint="run inside a job array, or pass --index N")
            return int(value)
    raise ConfigError("no array index: neither PBS_ARRAY_INDEX nor SLURM_ARRAY_TASK_ID is set",
                      hint="submit the sweep's pbs.sh / slurm.sh, or pass --index N")


def _train(spec: SweepSpec, config: Path, hostfile: str | None) -> int:
    train = [sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config)]
    launch = [*spec.launch, *(["--hostfile", hostfile] if hostfile else [])]
    argv = [sys.executable, "-m", "auroragpt.cli", "launch", *launch, "--", *train] if launch else train
    return subprocess.run(argv).returncode


def _result(spec: SweepSpec, run_dir: Path) -> dict[str, Any]:
    from auroragpt.train.metrics import read_lines

    records = [r for r in read_lines(run_dir / "metrics.jsonl") if spec.metric in r]
    values = [r[spec.metric] for r in records]
    best = (min if spec.goal == "min" else max)(values) if values else None
    return {"metric": spec.metric, "final": values[-1] if values else None, "best": best,
            "steps": records[-1].get("step") if records else 0}


def run_trial(spec: SweepSpec, tid: str, values: dict[str, Any], index: int,
              hostfile: str | None = None) -> dict[str, Any] | None:
    """Train trial `tid` and write its result.json; None when it was already finished."""
    if is_finished(spec, tid):
        print(f"sweep: trial {index} ({tid}) is finished already; skipping", flush=True)
        return None
    cfg = resolve(spec, values)
    config = save_trial_config(spec, cfg, tid)
    print(f"sweep: trial {index} ({tid}): {values}", flush=True)
    code = _train(spec, config, hostfile)
    if code != 0:
        raise ConfigError(f"trial {index} ({tid}) failed: training exited with code {code}",
                          hint=f"see its output above and {trial_dir(spec, tid) / 'run'}; resubmitting reruns it")
    result = {"index": index, "id": tid, "values": values, **_result(spec, Path(cfg.run.dir))}
    write_atomically(trial_dir(spec, tid) / RESULT, json.dumps(result, default=str))
    return result


def run_task(spec: SweepSpec, index: int, hostfile: str | None = None) -> dict[str, Any] | None:
    """Run the trial of array index `index` (on the hosts of `hostfile`, when given)."""
    if spec.method == "optuna":
        from auroragpt.sweep.optuna_study import run_optuna_task

        return run_optuna_task(spec, index, hostfile)
    trials = plan(spec)
    if not 0 <= index < len(trials):
        raise ConfigError(f"array index {index} is outside the sweep's {len(trials)} trials (0 to {len(trials) - 1})",
                          hint="submit the array the sweep wrote (it lists only existing trials)")
    trial = trials[index]
    return run_trial(spec, trial["id"], trial["values"], index, hostfile)


def resolved_id(spec: SweepSpec, values: dict[str, Any]) -> str:
    return trial_id(resolve(spec, values))
