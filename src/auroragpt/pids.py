"""Whether a process on this host still runs: one answer for launcher watches and for the cleanup
of files that a killed writer left behind."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while `pid` runs; another user's process counts as running, a zombie as ended (it has
    exited, only its parent has not collected it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
