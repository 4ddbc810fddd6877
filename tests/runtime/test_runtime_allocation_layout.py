"""`auroragpt launch` without --ppn/-n takes the layout the job was submitted with: sbatch -n /
--ntasks-per-node under Slurm, mpiprocs (hosts repeated in PBS_NODEFILE) under PBS."""

from __future__ import annotations

from pathlib import Path

import pytest

from auroragpt.runtime.launch import LaunchRequest, build_launch_plan
from auroragpt.runtime.scheduler import detect_allocation

CMD = ("python", "-c", "pass")


def slurm(**extra: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]", "PATH": "/usr/bin", **extra}


@pytest.mark.parametrize(("extra", "ranks", "ppn"), [
    ({"SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "n1"}, 2, 2),
    ({"SLURM_NTASKS": "8", "SLURM_TASKS_PER_NODE": "4(x2)"}, 8, 4),
    ({"SLURM_NTASKS": "7", "SLURM_TASKS_PER_NODE": "4,3"}, 7, 4),
    ({"SLURM_NTASKS_PER_NODE": "3", "SLURM_TASKS_PER_NODE": "3(x2)"}, 6, 3),
    # Only -N: Slurm reports one task per node, which is no request; accelerators decide (here 4).
    ({"SLURM_TASKS_PER_NODE": "1(x2)"}, 8, 4),
])
def test_slurm_layout_is_the_default(extra: dict[str, str], ranks: int, ppn: int) -> None:
    plan = build_launch_plan(LaunchRequest(CMD), env=slurm(**extra), default_ppn=4)
    assert (plan.nprocs, plan.ppn) == (ranks, ppn)
    assert f"--ntasks {ranks}" in plan.shell_line() and f"--ntasks-per-node {ppn}" in plan.shell_line()


def test_explicit_options_still_win() -> None:
    env = slurm(SLURM_NTASKS="8", SLURM_TASKS_PER_NODE="4(x2)")
    assert build_launch_plan(LaunchRequest(CMD, ppn=1), env=env).nprocs == 2
    assert build_launch_plan(LaunchRequest(CMD, nprocs=3), env=env).nprocs == 3
    assert build_launch_plan(LaunchRequest(CMD, nhosts=1), env=env).nprocs == 4


def test_pbs_mpiprocs_layout(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x1\nx1\nx1\nx2\nx2\nx2\n")
    env = {"PBS_JOBID": "1.pbs", "PBS_NODEFILE": str(nodefile), "PATH": "/usr/bin"}
    allocation = detect_allocation(env)
    assert (allocation.hosts, allocation.ranks_per_host, allocation.ranks) == (("x1", "x2"), 3, 6)
    plan = build_launch_plan(LaunchRequest(CMD), env=env, default_ppn=12, host_cpus=208)
    assert (plan.nprocs, plan.ppn) == (6, 3)
    nodefile.write_text("x1\nx2\n")  # mpiprocs=1: no statement, one rank per accelerator
    plan = build_launch_plan(LaunchRequest(CMD), env=env, default_ppn=12, host_cpus=208)
    assert (plan.nprocs, plan.ppn) == (24, 12)
