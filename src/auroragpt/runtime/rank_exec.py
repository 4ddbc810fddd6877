"""`python -m auroragpt.runtime.rank_exec -- CMD ...`: run one rank's command with its output
prefixed by "[rank N] ", and on failure print one line the launcher recognises
(`FAILURE_PATTERN`) so it can say which rank failed first. Imports nothing heavy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from typing import BinaryIO

from auroragpt.runtime.env import read_rank_info
from auroragpt.errors import AuroraError

FAILURE_PATTERN = re.compile(r"auroragpt launch: rank (\d+|\?) exited with code (\d+)")


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
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # so rank output streams instead of arriving at exit
    prefix = f"[rank {rank}] ".encode()
    try:
        # close_fds=False: MPI launchers hand the rank file descriptors (PMI_FD) it must keep.
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=False,
                                 **_child_options())
    except OSError as err:
        print(f"[rank {rank}] cannot start {args[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
        print(f"auroragpt launch: rank {rank} exited with code 127", file=sys.stderr, flush=True)
        return 127

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    pumps = [threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer, prefix), daemon=True),
             threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer, prefix), daemon=True)]
    for pump in pumps:
        pump.start()
    returncode = child.wait()
    for pump in pumps:
        pump.join(timeout=10)
    code = exit_code_of(returncode)
    if code != 0:
        how = f" (killed by {signal.Signals(-returncode).name})" if returncode < 0 and -returncode in signal.valid_signals() else ""
        print(f"auroragpt launch: rank {rank} exited with code {code}{how}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
