"""The one table of environment variables the toolbox itself reads (all start with AURORAGPT_).

Launcher variables (PMI_RANK, SLURM_PROCID, ...) are not ours; they live in `runtime/env.py`.
"""

from __future__ import annotations

import os

ENV_VARS: dict[str, str] = {
    "AURORAGPT_DEVICE": "force the accelerator: cuda, xpu, mps or cpu",
    "AURORAGPT_BACKEND": "force the collective backend: nccl, xccl, ccl or gloo",
    "AURORAGPT_LOG_LEVEL": "logging level (DEBUG, INFO, WARNING); default INFO",
    "AURORAGPT_LOG_ALL_RANKS": "1 to log from every rank, not only rank 0",
    "AURORAGPT_DIST_TIMEOUT": "seconds to wait for the process group to form; default 600",
    "AURORAGPT_API_KEYS": "comma-separated API keys accepted by `auroragpt serve`",
    "AURORAGPT_LAUNCHER_PID": "set by `auroragpt launch` for its ranks: the pid they die with (on its host)",
    "AURORAGPT_LAUNCHER_HOST": "set by `auroragpt launch` for its ranks: the host AURORAGPT_LAUNCHER_PID runs on",
    "AURORAGPT_HEALTH_FAIL": "comma-separated node names whose health check fails on purpose (fault-injection drills)",
}


def read(name: str, default: str | None = None) -> str | None:
    """Read one of our variables; a name missing from ENV_VARS is a programming error."""
    if name not in ENV_VARS:
        raise KeyError(f"{name} is not in auroragpt.envvars.ENV_VARS; add it there first")
    value = os.environ.get(name)
    return value if value not in (None, "") else default
