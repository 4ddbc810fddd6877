"""On a real one-node Slurm cluster (slurm-wlm, started by the slurm_cluster fixture): `auroragpt
launch` inside `sbatch -n 2` runs the allocation's 2 ranks without --ppn, a short training run
works through sbatch, and job arrays hand each task its SLURM_ARRAY_TASK_ID."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _script(body: str) -> str:
    return f"#!/bin/bash\nset -euo pipefail\nexport PATH={BIN}:$PATH OMP_NUM_THREADS=1\n{body}\n"


def test_sbatch_n2_launch_takes_the_allocation_layout(slurm_cluster, tmp_path: Path) -> None:
    done = slurm_cluster.submit(_script("auroragpt launch -- python -m auroragpt.runtime.selfcheck"),
                                tmp_path, "-n", "2", "--output=out.txt")
    out = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, out[-3000:]
    assert "running 2 rank(s) on 1 host(s)" in out and "all-reduce: ok (sum over 2 ranks)" in out
    assert "selfcheck: passed" in out


def test_sbatch_short_training_run(slurm_cluster, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train = (f"auroragpt launch -- auroragpt train --config {REPO / 'configs/demo.toml'} --data.synthetic=true "
             f"--model.vocab_size=128 --data.seq_len=32 --train.steps=4 --checkpoint.every=4 "
             f"--metrics.log_every=1 --metrics.plots=false --run.dir={run}")
    done = slurm_cluster.submit(_script(train), tmp_path, "-n", "2", "--output=out.txt", timeout=300)
    out = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, out[-3000:]
    assert "running 2 rank(s)" in out
    steps = (run / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in steps if '"loss"' in line]) >= 4


def test_job_array_tasks_see_their_index(slurm_cluster, tmp_path: Path) -> None:
    done = slurm_cluster.submit(_script('echo "$SLURM_ARRAY_TASK_ID" > "task-$SLURM_ARRAY_TASK_ID.txt"'),
                                tmp_path, "--array=0-3%2", "--output=/dev/null")
    assert done.returncode == 0, done.stderr
    assert sorted(p.read_text().strip() for p in tmp_path.glob("task-*.txt")) == ["0", "1", "2", "3"]
    assert os.environ.get("SLURM_ARRAY_TASK_ID") is None
