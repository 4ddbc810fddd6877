"""`auroragpt doctor` output and exit status, and the distributed timeout setting."""

from __future__ import annotations

import pytest

from auroragpt.cli import main
from auroragpt.runtime.setup import timeout_seconds
from auroragpt.errors import DistError


def test_doctor_one_screen(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for label in ("torch", "device", "backend", "scheduler", "mpiexec", "mpi4py", "auroragpt"):
        assert f"\n  {label} " in out, out
    assert "none: 1 host(s) from this machine" in out
    assert len(out.splitlines()) < 40


def test_doctor_gives_a_fix_for_each_problem(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                              tmp_path) -> None:
    clean_env.setenv("AURORAGPT_BACKEND", "nccl")
    clean_env.setenv("AURORAGPT_DEVICE", "cpu")
    clean_env.setenv("SLURM_JOB_ID", "1")
    clean_env.setenv("SLURM_JOB_NODELIST", "nid[1-")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "problems:" in out and "Traceback" not in out
    assert "AURORAGPT_BACKEND=nccl cannot drive a cpu device" in out
    assert "cannot read the Slurm node list" in out
    problems = out.split("problems:")[1]
    assert problems.count("  - ") == problems.count("    fix: ")


def test_timeout_setting(clean_env: pytest.MonkeyPatch) -> None:
    assert timeout_seconds(None) == 600.0
    assert timeout_seconds(30) == 30.0
    clean_env.setenv("AURORAGPT_DIST_TIMEOUT", "90")
    assert timeout_seconds(None) == 90.0
    clean_env.setenv("AURORAGPT_DIST_TIMEOUT", "soon")
    with pytest.raises(DistError, match="AURORAGPT_DIST_TIMEOUT|not a positive number"):
        timeout_seconds(None)


def test_timeout_reaches_the_rendezvous() -> None:
    """Rank 0 of 2 whose partner never comes: AURORAGPT_DIST_TIMEOUT=1 ends it in seconds, not 10 minutes."""
    import subprocess
    import sys
    import time

    from auroragpt.runtime.setup import free_port
    from runtime_cli_helpers import child_env

    env = child_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2", TORCHELASTIC_RUN_ID="t",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), AURORAGPT_DIST_TIMEOUT="1")
    script = ("import sys\nfrom auroragpt.runtime.setup import setup\nfrom auroragpt.errors import DistError\n"
              "try:\n    setup()\nexcept DistError as err:\n    print(err.message)\n    sys.exit(2)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "rank 0 of 2 could not join the process group at 127.0.0.1" in result.stdout
    assert time.monotonic() - started < 30
