"""`auroragpt sweep`: 4 learning-rate trials of the tiny model run as array tasks, a resubmission
runs none, results come as a table and a PNG; Optuna tasks sharing one journal draw distinct
trials; the Slurm array the sweep writes runs on a real Slurm cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE = """
[model]
preset = "tiny"
n_layers = 2
vocab_size = 128
[data]
synthetic = true
seq_len = 32
micro_batch = 4
global_batch = 4
[train]
steps = 50
[optim]
lr = 1e-3
warmup_steps = 5
[checkpoint]
every = 1000
[metrics]
log_every = 5
plots = false
"""


def sweep(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for name in ("PBS_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID"):
        env.setdefault(name, "") if name in (env or {}) else env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "auroragpt.cli", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_spec(folder: Path, body: str) -> Path:
    (folder / "base.toml").write_text(BASE)
    spec = folder / "spec.toml"
    spec.write_text(f'base = "base.toml"\ndir = "out"\n{body}')
    return spec


FOUR = 'method = "grid"\nconcurrent = 2\n[overrides]\n"train.steps" = 50\n[axes]\n"optim.lr" = [1e-3, 3e-3, 1e-2, 3e-2]\n'
ENSEMBLE = '[overrides]\n"train.steps" = 3\n"model.n_layers" = 1\n[axes]\n"optim.lr" = [1e-3, 1e-2]\n'
ARRAY_VARIABLES = ("PBS_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID")


def _early_sweep(*args: str, **variables: str) -> list[str]:
    """A `sweep` command with exactly the given array variables set."""
    unset = [f"-u{name}" for name in ARRAY_VARIABLES]
    return ["env", *unset, *(f"{k}={v}" for k, v in variables.items()), sys.executable, "-m", "auroragpt.cli", "sweep", *args]


# The trials are single-process training runs (~5 s each): the tests/conftest.py hook runs them in the
# background from the session's start, on the core the single-process tests leave idle.
EARLY_FILES = {"four/base.toml": BASE, "four/spec.toml": f'base = "base.toml"\ndir = "out"\n{FOUR}',
               "ensemble/base.toml": BASE, "ensemble/spec.toml": f'base = "base.toml"\ndir = "out"\n{ENSEMBLE}'}
EARLY_COMMANDS = {
    "four": _early_sweep("four/spec.toml"),
    **{f"four_task{index}": _early_sweep("task", "four/spec.toml", **{variable: str(index)})
       for index, variable in enumerate(ARRAY_VARIABLES * 2)},
    "ensemble_plan": _early_sweep("ensemble/spec.toml"),
    "ensemble": _early_sweep("ensemble", "ensemble/spec.toml", "--nodes-per-trial", "1"),
}


def test_four_lr_trials_as_array_tasks_then_resubmit_runs_none(early_commands) -> None:
    results, tmp_path = early_commands.wait(timeout=600), early_commands.folder / "four"
    planned = results["four"]
    assert planned.returncode == 0, planned.stderr
    out = tmp_path / "out"
    assert "#SBATCH --array=0-3%2" in (out / "slurm.sh").read_text()
    assert "#PBS -J 0-3" in (out / "pbs.sh").read_text() and "PBS_ARRAY_INDEX" in (out / "pbs.sh").read_text()
    for index in range(4):
        task = results[f"four_task{index}"]
        assert task.returncode == 0, task.stderr[-3000:]
    seconds = sum(early_commands.seconds[f"four_task{index}"] for index in range(4))
    assert seconds < 180, f"4 trials x 50 steps took {seconds:.0f} s"
    trials = [json.loads(p.read_text()) for p in sorted(out.glob("trials/*/result.json"))]
    assert sorted(r["values"]["optim.lr"] for r in trials) == [1e-3, 3e-3, 1e-2, 3e-2]
    assert len({r["id"] for r in trials}) == 4 and all(r["steps"] == 50 for r in trials)
    # Resubmitting: nothing to submit, and a task started anyway runs nothing.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")}
    again = sweep("spec.toml", cwd=tmp_path)
    assert again.returncode == 0 and "every trial is finished; nothing to submit" in again.stdout
    task = sweep("task", "spec.toml", cwd=tmp_path, env={"SLURM_ARRAY_TASK_ID": "2"})
    assert task.returncode == 0 and "finished already; skipping" in task.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")}
    table = sweep("results", "out", cwd=tmp_path)
    assert table.returncode == 0 and "optim.lr" in table.stdout and "final loss" in table.stdout
    assert len(table.stdout.splitlines()) == 5 and (out / "results.png").stat().st_size > 1000


def test_resubmission_lists_only_unfinished_trials(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from auroragpt.sweep.plan import RESULT, compress, plan, trial_dir, write_scripts
    from auroragpt.sweep.spec import load_spec

    spec = load_spec(write_spec(tmp_path, '[axes]\n"optim.lr" = [1e-3, 3e-3]\n"train.steps" = [1, 2, 3]\nconcurrent = 4\n'
                                .replace("concurrent = 4\n", "")))
    trials = plan(spec)
    assert [t["id"] for t in trials] == [t["id"] for t in plan(load_spec(spec.path))]  # stable
    for index in (0, 2, 3):
        trial_dir(spec, trials[index]["id"]).mkdir(parents=True)
        (trial_dir(spec, trials[index]["id"]) / RESULT).write_text("{}")
    assert "--array=1,4-5\n" in write_scripts(spec)["slurm"].read_text()
    assert compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_bad_spec_is_explained(tmp_path: Path) -> None:
    write_spec(tmp_path, '[axes]\n"optim.learning_rate" = [1e-3]\n')
    proc = sweep("spec.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "spec.toml" in proc.stderr and "optim.learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = sweep("task", "spec.toml", cwd=tmp_path)
    assert proc.returncode == 2


def test_optuna_tasks_sharing_a_journal_draw_distinct_trials(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    write_spec(tmp_path, 'method = "optuna"\ntrials = 2\n[overrides]\n"train.steps" = 3\n"model.n_layers" = 1\n'
                         '[axes]\n"optim.lr" = {min = 1e-4, max = 1e-1, log = true}\n"optim.warmup_steps" = {min = 0, max = 3}\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "auroragpt.cli", "sweep", "task", "spec.toml", "--index", str(i)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="out", storage=JournalStorage(JournalFileBackend(str(tmp_path / "out/optuna.journal"))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and len({t.number for t in complete}) == 2
    assert complete[0].params != complete[1].params
    assert len(list((tmp_path / "out/trials").glob("*/result.json"))) == 2
    again = sweep("spec.toml", cwd=tmp_path)
    assert "nothing to submit" in again.stdout


def test_sweep_slurm_array_on_a_real_cluster(slurm_cluster, tmp_path: Path) -> None:
    write_spec(tmp_path, 'concurrent = 2\n[overrides]\n"train.steps" = 3\n"model.n_layers" = 1\n'
                         '[axes]\n"optim.lr" = [1e-3, 1e-2]\n')
    assert sweep("spec.toml", cwd=tmp_path).returncode == 0
    script = (tmp_path / "out/slurm.sh").read_text().replace("# each task", "export OMP_NUM_THREADS=1\n# each task")
    done = slurm_cluster.submit(script, tmp_path, timeout=300)
    logs = "".join(p.read_text() for p in (tmp_path / "out/logs").glob("*.out"))
    assert done.returncode == 0, logs[-3000:]
    assert len(list((tmp_path / "out/trials").glob("*/result.json"))) == 2


def test_ensemble_runs_pending_trials_on_node_groups(early_commands) -> None:
    results, tmp_path = early_commands.wait(timeout=600), early_commands.folder / "ensemble"
    assert results["ensemble_plan"].returncode == 0, results["ensemble_plan"].stderr
    proc = results["ensemble"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 trial(s) on 1 group(s) of 1 node(s)" in proc.stdout
    assert len(list((tmp_path / "out/trials").glob("*/result.json"))) == 2
    bad = sweep("ensemble", "spec.toml", "--nodes-per-trial", "2", cwd=tmp_path)
    assert bad.returncode == 2 and "does not fit the allocation's 1 node(s)" in bad.stderr
