"""Node health checks and restarts that leave bad nodes out, with injected faults: a fake node
list whose "node1" fails its check, and a job whose rank on node1 fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from auroragpt.errors import LaunchError
from auroragpt.runtime import resilient
from auroragpt.runtime.launch import LaunchRequest, build_launch_plan
from auroragpt.runtime.runner import JobResult

CMD = ("python", "-c", "pass")


def fake_nodes(tmp_path, count: int = 3):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"node{i}\n" for i in range(count)))
    request = LaunchRequest(CMD, hostfile=str(hostfile), ppn=1, launcher="mpiexec")
    return request, build_launch_plan(request, env={"PATH": os.environ["PATH"]}, mpi_flavour="MPICH hydra")


def test_failing_node_is_named_and_excluded(tmp_path, monkeypatch, capfd) -> None:
    request, plan = fake_nodes(tmp_path)
    monkeypatch.setenv("AURORAGPT_HEALTH_FAIL", "node1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Every fake node's check runs on this machine (torchrun); node1's fails by injection.
    checked = []
    real_check_nodes = resilient.check_nodes
    monkeypatch.setattr(resilient, "check_nodes", lambda *a, **k: checked.append(real_check_nodes(*a, **k)) or checked[-1])
    healthy = resilient.healthy_plan(request, plan, 2, str(tmp_path), check_launcher="torchrun")
    assert healthy.hosts == ("node0", "node2") and healthy.nprocs == 2
    assert "-hosts node0,node2" in healthy.shell_line() or "node0\nnode2" in open(healthy.argv[healthy.argv.index("-f") + 1]).read()
    err = capfd.readouterr().err
    assert "node node1 failed its health check: injected failure" in err
    # the same nodes, 3 of them required: the round of checks above decides, not a second one
    monkeypatch.setattr(resilient, "check_nodes", lambda *a, **k: checked[0])
    with pytest.raises(LaunchError) as stop:
        resilient.healthy_plan(request, plan, 3, str(tmp_path), check_launcher="torchrun")
    assert "only 2 of 3 node(s) are usable" in stop.value.message and "node1" in stop.value.message


def test_retry_restarts_without_the_node_of_the_failed_rank(tmp_path, monkeypatch) -> None:
    request, plan = fake_nodes(tmp_path)
    attempts = []

    def run_once(plan):
        attempts.append(plan.hosts)
        return JobResult(3, "1", False) if "node1" in plan.hosts else JobResult(0, None, False)

    monkeypatch.setattr("auroragpt.runtime.runner.run_once", run_once)
    assert resilient.run_excluding_failed(request, plan, retries=2, min_nodes=2) == 0
    assert attempts == [("node0", "node1", "node2"), ("node0", "node2")]
    attempts.clear()
    with pytest.raises(LaunchError, match="--min-nodes is 3"):
        resilient.run_excluding_failed(request, plan, retries=2, min_nodes=3)


def test_check_nodes_on_this_machine_then_the_job_runs(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AURORAGPT_HEALTH_FAIL", None)
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", "2", "--launcher", "torchrun",
                           "--check-nodes", "--run-dir", str(tmp_path), "--", sys.executable, "-c", "print('job ran')"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every node passed its health check" in proc.stderr and proc.stdout.count("job ran") == 2
    env["AURORAGPT_HEALTH_FAIL"] = __import__("socket").gethostname()
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", "2", "--launcher", "torchrun",
                           "--check-nodes", "--", sys.executable, "-c", "print('job ran')"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 2 and "--min-nodes is 1" in proc.stderr and "job ran" not in proc.stdout
