"""Optuna sweeps on a shared file system: the study lives in a journal file (JournalStorage), so
tasks on different nodes need no database server; each array index asks for its own trial once."""

from __future__ import annotations

import json
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.sweep.spec import SweepSpec


def open_study(spec: SweepSpec):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    spec.dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(spec.dir / "optuna.journal")))
    direction = "minimize" if spec.goal == "min" else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.dir.name, storage=storage, direction=direction, load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=None))


def suggest(trial, spec: SweepSpec) -> dict[str, Any]:
    values = {}
    for key, axis in spec.axes.items():
        if isinstance(axis, list):
            values[key] = trial.suggest_categorical(key, axis)
        elif isinstance(axis["min"], int) and isinstance(axis["max"], int) and not axis.get("log"):
            values[key] = trial.suggest_int(key, axis["min"], axis["max"])
        else:
            values[key] = trial.suggest_float(key, float(axis["min"]), float(axis["max"]), log=bool(axis.get("log")))
    return values


def run_optuna_task(spec: SweepSpec, index: int, hostfile: str | None = None) -> dict[str, Any] | None:
    """Ask the study for a trial (or reuse the one this index asked for before), train, tell."""
    from auroragpt.sweep.plan import is_finished
    from auroragpt.sweep.task import resolved_id, run_trial

    study = open_study(spec)
    marker = spec.dir / "optuna" / f"index-{index}.json"
    if marker.is_file():
        known = json.loads(marker.read_text())
        if is_finished(spec, known["id"]):
            print(f"sweep: trial {index} ({known['id']}) is finished already; skipping", flush=True)
            return None
    trial = study.ask()  # an earlier attempt of this index that died stays failed in the study
    values = suggest(trial, spec)
    tid = resolved_id(spec, values)
    write_atomically(marker, json.dumps({"id": tid, "number": trial.number, "values": values}, default=str))
    try:
        result = run_trial(spec, tid, values, index, hostfile)
    except BaseException:
        import optuna

        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value = result["final"] if result else None
    study.tell(trial, value)
    return result
