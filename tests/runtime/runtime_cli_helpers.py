"""Helpers for tests/runtime (a uniquely named module, since several test folders have a conftest):
the launcher/scheduler variables to strip, and running the real `auroragpt` CLI with a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from auroragpt.runtime.env import (LAUNCHER_VARIABLES, MPI_EVIDENCE, SLURM_NODE_ID, SLURM_NODELISTS, SLURM_STEP_ID,
                                SLURM_TASKS_PER_NODE)
from auroragpt.runtime.scheduler import SCHEDULER_VARIABLES

BIN = Path(sys.executable).parent


def _foreign_variables() -> set[str]:
    names = {"MASTER_ADDR", "MASTER_PORT", "SLURM_NODELIST", "AURORAGPT_DEVICE", "AURORAGPT_BACKEND",
             "AURORAGPT_DIST_TIMEOUT", SLURM_NODE_ID, SLURM_STEP_ID, *SLURM_NODELISTS, *SLURM_TASKS_PER_NODE, *MPI_EVIDENCE}
    for table in LAUNCHER_VARIABLES.values():
        names.update(table.rank + table.world_size + table.local_rank + table.local_world_size + table.present_if)
    for variables in SCHEDULER_VARIABLES.values():
        names.update(variables)
    return names


FOREIGN = _foreign_variables()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run `auroragpt ARGS` for real and capture its output."""
    return subprocess.run([str(BIN / "auroragpt"), *args], env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def assert_one_paragraph_error(stderr: str, *needles: str) -> None:
    """A user error: one paragraph (message + fix), named clearly, never a traceback."""
    assert "Traceback" not in stderr, stderr
    text = stderr.strip()
    assert text, "expected an error message"
    assert "\n\n" not in text, text
    assert text.count("\n") <= 1, text  # message line, and the `fix:` line
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
