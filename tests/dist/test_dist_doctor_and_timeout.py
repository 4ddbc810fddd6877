"""`auroragpt doctor` output and exit status, and the distributed timeout setting."""

from __future__ import annotations

import pytest

from auroragpt.cli import main
from auroragpt.dist.setup import _timeout_seconds
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
    assert _timeout_seconds(None) == 600.0
    assert _timeout_seconds(30) == 30.0
    clean_env.setenv("AURORAGPT_DIST_TIMEOUT", "90")
    assert _timeout_seconds(None) == 90.0
    clean_env.setenv("AURORAGPT_DIST_TIMEOUT", "soon")
    with pytest.raises(DistError, match="AURORAGPT_DIST_TIMEOUT|not a positive number"):
        _timeout_seconds(None)
