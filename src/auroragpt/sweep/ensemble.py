"""A node-split ensemble: inside one allocation, cut its nodes into groups and run the pending
trials side by side, one per group, each through `auroragpt launch --hostfile GROUP`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from auroragpt.errors import ConfigError
from auroragpt.sweep.spec import SweepSpec


def node_groups(hosts: tuple[str, ...], per_trial: int) -> list[tuple[str, ...]]:
    if per_trial < 1 or per_trial > len(hosts):
        raise ConfigError(f"--nodes-per-trial {per_trial} does not fit the allocation's {len(hosts)} node(s)",
                          hint=f"choose 1 to {len(hosts)}")
    return [hosts[i:i + per_trial] for i in range(0, len(hosts) - per_trial + 1, per_trial)]


def run_ensemble(spec: SweepSpec, per_trial: int) -> int:
    """Run every pending trial; returns 0 when all finished, 1 when any failed."""
    from auroragpt.runtime.scheduler import detect_allocation
    from auroragpt.sweep.plan import pending

    groups = node_groups(detect_allocation().hosts, per_trial)
    todo = pending(spec)
    print(f"sweep ensemble: {len(todo)} trial(s) on {len(groups)} group(s) of {per_trial} node(s)", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="sweep-hosts-", dir=spec.dir if spec.dir.is_dir() else None))
    running: dict[int, subprocess.Popen] = {}  # group -> its trial's process
    failures = 0
    while todo or running:
        for group, proc in list(running.items()):
            if proc.poll() is not None:
                failures += proc.returncode != 0
                del running[group]
        for group in range(len(groups)):
            if todo and group not in running:
                hostfile = folder / f"group-{group}"
                hostfile.write_text("".join(f"{host}\n" for host in groups[group]))
                index = todo.pop(0)
                running[group] = subprocess.Popen([sys.executable, "-m", "auroragpt.cli", "sweep", "task", str(spec.path),
                                                   "--index", str(index), "--hostfile", str(hostfile)])
        time.sleep(0.2)
    return 1 if failures else 0
