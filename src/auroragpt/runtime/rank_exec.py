"""`python -m auroragpt.runtime.rank_exec -- CMD ...`: run one rank's command with its output
prefixed by "[rank N] ", and on failure print one line the launcher recognises
(`FAILURE_PATTERN`, with the rank's host) so it can say which rank failed first. Imports nothing heavy.

A rank never outlives the job's launcher: this wrapper asks the kernel for SIGTERM when its own
parent (mpiexec's proxy, torch's elastic agent, slurmstepd) dies, and, on the launcher's host,
watches the `auroragpt launch` process itself (AURORAGPT_LAUNCHER_PID), which mpiexec or srun may
survive when it is killed by SIGKILL. Either way the command is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from auroragpt import pids
from auroragpt.runtime.env import read_rank_info
from auroragpt.errors import AuroraError

# The host stops where another report begins: ranks' reports can meet on one line of a merged stream.
FAILURE_PATTERN = re.compile(r"auroragpt launch: rank (\d+|\?) exited with code (\d+)"
                             r"(?:.*? on host (\S+?)(?=auroragpt launch:|\s|$))?")
WATCH_INTERVAL_S = 0.5
STOP_GRACE_S = 3.0


def _report(line: str) -> None:
    """One line to stderr in a single write: under mpiexec every rank's stderr is merged, and a line
    written in two pieces (print's text, then its newline) can be split by another rank's line."""
    sys.stderr.flush()
    os.write(2, (line + "\n").encode())


def _pump(source: BinaryIO, sink: BinaryIO, prefix: bytes) -> None:
    for line in iter(source.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        sink.write(prefix + line)
        sink.flush()


def _child_options() -> dict:
    """On Linux, the command gets a process group of its own, so a signal that the MPI launcher or
    torchrun sends to this rank's group reaches it once (from `forward`), not twice; and it dies with
    this process if that is killed outright, instead of running on as an orphan."""
    if not sys.platform.startswith("linux"):
        return {}
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(137)

    return {"process_group": 0, "preexec_fn": die_with_parent}


def _set_parent_death_signal(signum: int) -> None:
    """Linux: deliver `signum` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG


def _launcher_to_watch() -> int | None:
    """The pid of `auroragpt launch` when it runs on this host (set by the runner), else None."""
    from auroragpt import envvars

    pid, host = envvars.read("AURORAGPT_LAUNCHER_PID"), envvars.read("AURORAGPT_LAUNCHER_HOST")
    if not pid or not pid.isdigit() or host != socket.gethostname():
        return None
    return int(pid)


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM the command, SIGKILL it after STOP_GRACE_S."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()


def _watch_launcher(pid: int, child: subprocess.Popen, rank: int | str) -> None:
    while child.poll() is None:
        if not pids.alive(pid):
            print(f"[rank {rank}] auroragpt launch (pid {pid}) is gone: stopping this rank", file=sys.stderr, flush=True)
            _stop(child)
            return
        time.sleep(WATCH_INTERVAL_S)


def exit_code_of(returncode: int) -> int:
    """Shell-style exit code: a death by signal N becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    try:
        rank: int | str = read_rank_info(use_mpi4py=False).rank
    except AuroraError:
        rank = "?"  # the command itself will report the bad variables through setup()
    if not args:
        print(f"auroragpt launch: rank {rank}: no command given", file=sys.stderr)
        return 2
    _set_parent_death_signal(signal.SIGTERM)  # then `forward` below stops the command
    launcher_pid = _launcher_to_watch()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # so rank output streams instead of arriving at exit
    prefix = f"[rank {rank}] ".encode()
    try:
        # close_fds=False: MPI launchers hand the rank file descriptors (PMI_FD) it must keep.
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=False,
                                 **_child_options())
    except OSError as err:
        print(f"[rank {rank}] cannot start {args[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
        _report(f"auroragpt launch: rank {rank} exited with code 127 on host {socket.gethostname()}")
        return 127

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    pumps = [threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer, prefix), daemon=True),
             threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer, prefix), daemon=True)]
    if launcher_pid is not None:
        pumps.append(threading.Thread(target=_watch_launcher, args=(launcher_pid, child, rank), daemon=True))
    for pump in pumps:
        pump.start()
    returncode = child.wait()
    for pump in pumps:
        pump.join(timeout=10)
    code = exit_code_of(returncode)
    if code != 0:
        how = f" (killed by {signal.Signals(-returncode).name})" if returncode < 0 and -returncode in signal.valid_signals() else ""
        _report(f"auroragpt launch: rank {rank} exited with code {code}{how} on host {socket.gethostname()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
