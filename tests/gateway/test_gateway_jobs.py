"""What a scheduler leaves behind: nothing after a refused submission, no zombie after a cancel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from auroragpt.errors import LaunchError
from auroragpt.gateway.config import ModelSpec, Site
from auroragpt.gateway.jobs import LocalScheduler, SlurmScheduler


def test_a_refused_submission_leaves_no_job_key_behind(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sched = SlurmScheduler(Site(name="cluster", scheduler="slurm"), tmp_path / "state")
    spec = ModelSpec(name="tiny", path=str(tmp_path), sites=["cluster"])
    try:
        sched.submit(spec)
    except LaunchError as err:
        assert "invalid partition" in str(err)
    else:
        raise AssertionError("a refused sbatch must raise")
    assert not list((tmp_path / "state" / "jobs").glob("*.key"))


def test_a_cancelled_local_job_that_ignores_sigterm_is_killed_and_reaped(tmp_path):
    sched = LocalScheduler(Site(name="here", scheduler="local"), tmp_path / "state")
    ready = tmp_path / "ready"
    code = (f"import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"pathlib.Path({str(ready)!r}).touch(); time.sleep(600)")
    job = sched.launch("stubborn-0", [sys.executable, "-c", code], "tiny")
    pid = int(job.id.split("-", 1)[1])
    while not ready.exists():
        assert sched.status(job) == "started"
    sched.cancel(job, grace_s=0.2)
    assert not Path(f"/proc/{pid}").exists(), "the killed job is still there (a zombie nobody reaped)"
