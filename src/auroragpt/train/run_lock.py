"""One job per run folder: an exclusive lock on RUN_DIR/.lock, taken by rank 0 before training.

Two jobs on one folder would interleave checkpoints and metrics, so a second job is refused with
a message naming the holder's host and pid. The lock is a kernel `flock` on a file that is never
replaced or deleted (so every job locks the same inode): the kernel drops it on any exit,
SIGKILL included. Beside it, `.lock.owner` records who holds it (host, pid, start time) and is
touched every HEARTBEAT_S seconds, because flock is not honoured across hosts by every shared
file system: an owner on another host whose heartbeat is older than STALE_S is taken to be dead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.errors import AuroraError
from auroragpt.log import get_logger

log = get_logger(__name__)

LOCK = ".lock"
OWNER = ".lock.owner"
HEARTBEAT_S = 15.0
STALE_S = 120.0


class RunLocked(AuroraError):
    """Another job is training in this run folder."""


def _read_owner(run_dir: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads((run_dir / OWNER).read_text())
        age = time.time() - (run_dir / OWNER).stat().st_mtime
    except (OSError, ValueError):
        return None
    return {**owner, "age_s": age} if isinstance(owner, dict) else None


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (its owner record is unreadable)"
    return f"pid {owner.get('pid')} on host {owner.get('host')} (started {owner.get('started', '?')})"


class RunLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise RunLocked naming the holder; a stale record is taken over with a warning."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"run folder {self.run_dir} is in use by {_describe(_read_owner(self.run_dir))}",
                            hint="wait for that job to end (or stop it), or choose another --run.dir") from None
        host = socket.gethostname()
        owner = _read_owner(self.run_dir)
        if owner and (owner.get("host"), owner.get("pid")) != (host, os.getpid()):
            if owner.get("host") != host and owner["age_s"] < STALE_S:
                os.close(fd)
                raise RunLocked(
                    f"run folder {self.run_dir} is in use by {_describe(owner)} (its heartbeat is "
                    f"{owner['age_s']:.0f} s old)",
                    hint=f"wait for that job to end, or choose another --run.dir; a job that died on that host "
                    f"is taken over once its heartbeat is {STALE_S:.0f} s old")
            log.warning("taking over the run-folder lock of %s, which is no longer running", _describe(owner))
        self._fd = fd
        record = {"host": host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        write_atomically(self.run_dir / OWNER, json.dumps(record) + "\n")
        self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.run_dir / OWNER)
            except OSError:
                pass

    def release(self) -> None:
        """Remove the owner record and drop the lock (the lock file itself stays, see the module doc)."""
        if self._fd is None:
            return
        self._stop.set()
        try:
            (self.run_dir / OWNER).unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
