"""Run a LaunchPlan: stream the ranks' output, forward SIGINT/SIGTERM/SIGHUP, report the first
failing rank (its exit code, host and last lines), stop the rest of the job within seconds of a
failure, and restart a failed job up to `retries` times.

The ranks never outlive this process: the launcher program gets SIGTERM from the kernel when this
process dies (even by SIGKILL), and each rank's wrapper on this host watches this pid too
(AURORAGPT_LAUNCHER_PID, see `auroragpt.runtime.rank_exec`)."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from auroragpt.runtime.launch import LaunchPlan
from auroragpt.runtime.rank_exec import FAILURE_PATTERN, exit_code_of
from auroragpt.errors import LaunchError


@dataclasses.dataclass(frozen=True)
class JobResult:
    exit_code: int
    failed_rank: str | None  # the first rank that reported a failure ("?" if it could not tell its rank)
    interrupted: bool
    failed_host: str | None = None
    last_lines: tuple[str, ...] = ()


RANK_LINE = re.compile(r"^\[rank (\d+|\?)\] (.*)$")
LAST_LINES = 8


def check_retries(retries: int) -> None:
    if retries < 0:
        raise LaunchError(f"--retries {retries} must be 0 or more", hint="pass --retries 0 (no restart) or more")


def run_plan(plan: LaunchPlan, retries: int = 0, grace_s: float = 10.0, failure_grace_s: float = 2.0) -> int:
    """Run the job, restarting it up to `retries` times after a failure; returns the exit code.

    When a rank fails, the others get `failure_grace_s` to finish, then SIGTERM; anything still
    alive `grace_s` after a SIGTERM or a forwarded signal is killed.
    """
    check_retries(retries)
    _say(f"running {plan.nprocs} rank(s) on {len(plan.hosts)} host(s): {plan.shell_line()}")
    result = JobResult(0, None, False)
    for attempt in range(retries + 1):
        if attempt:
            _say(f"restarting the job (attempt {attempt + 1} of {retries + 1})")
        result = _run_once(plan, grace_s, failure_grace_s)
        if result.exit_code == 0:
            return 0
        if result.interrupted:
            _say(f"interrupted; the ranks were stopped (exit code {result.exit_code})")
            return result.exit_code
        if result.failed_rank is not None:
            where = f", on host {result.failed_host}" if result.failed_host else ""
            tail = "".join(f"\n    {line}" for line in result.last_lines)
            _say(f"rank {result.failed_rank} failed first, with exit code {result.exit_code}{where} "
                 f"(its output is prefixed [rank {result.failed_rank}] above)"
                 + (f"; its last lines:{tail}" if tail else ""))
        else:
            _say(f"{plan.launcher} exited with code {result.exit_code} before any rank reported a failure")
    return result.exit_code


def _say(message: str) -> None:
    print(f"auroragpt launch: {message}", file=sys.stderr, flush=True)


def _die_with_this_process() -> dict:
    """Popen options: on Linux the launcher program gets SIGTERM when this process dies, so
    mpiexec, srun or the elastic agent stop the ranks instead of training on unattended."""
    if not sys.platform.startswith("linux"):
        return {}
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(143)

    return {"preexec_fn": set_death_signal}


def _run_once(plan: LaunchPlan, grace_s: float, failure_grace_s: float) -> JobResult:
    env = {**os.environ, "AURORAGPT_LAUNCHER_PID": str(os.getpid()), "AURORAGPT_LAUNCHER_HOST": socket.gethostname()}
    try:
        proc = subprocess.Popen(plan.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env=env, **_die_with_this_process())
    except FileNotFoundError:
        raise LaunchError(f"the launcher program {plan.argv[0]!r} was not found on PATH",
                          hint="load the MPI module (or activate the venv that has mpiexec), "
                          "or choose another with --launcher") from None
    failures: list[tuple[str, int, str | None, tuple[str, ...]]] = []  # in the order they were reported
    recent: dict[str, collections.deque[str]] = collections.defaultdict(lambda: collections.deque(maxlen=LAST_LINES))
    received: list[int] = []
    signal_times: list[float] = []
    failure_times: list[float] = []

    def pump(source: BinaryIO, sink: BinaryIO, scan: bool) -> None:
        for line in iter(source.readline, b""):
            sink.write(line)
            sink.flush()
            text = line.decode("utf-8", "replace").rstrip("\n")
            reports = list(FAILURE_PATTERN.finditer(text)) if scan else []
            for match in reports:  # two ranks' reports may share a line of the merged stream
                failures.append((match.group(1), int(match.group(2)), match.group(3), tuple(recent[match.group(1)])))
                failure_times.append(time.monotonic())
            if not reports and (tagged := RANK_LINE.match(text)):
                recent[tagged.group(1)].append(tagged.group(2))

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        signal_times.append(time.monotonic())
        if proc.poll() is None:
            # First signal: ask politely (the launcher passes it to every rank); second: force.
            if len(received) == 1:  # a hangup (the terminal is gone) stops the job like SIGTERM
                proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
            else:
                _kill_group(proc)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, forward)
    pumps = [threading.Thread(target=pump, args=(proc.stdout, sys.stdout.buffer, False), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, sys.stderr.buffer, True), daemon=True)]
    try:
        for thread in pumps:
            thread.start()
        stopping_since: float | None = None
        while proc.poll() is None:
            time.sleep(0.05)
            now = time.monotonic()
            if signal_times and now - signal_times[0] > grace_s:
                _kill_group(proc)
            elif failure_times and stopping_since is None and now - failure_times[0] > failure_grace_s:
                # A rank died; the others would wait in their next collective forever. Stop them.
                stopping_since = now
                proc.send_signal(signal.SIGTERM)
            elif stopping_since is not None and now - stopping_since > grace_s:
                _kill_group(proc)
        for thread in pumps:
            thread.join(timeout=10)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait(timeout=30)
    if received:
        return JobResult(128 + received[0], None, True)
    if failures:
        rank, code, host, lines = _root_cause(failures)
        return JobResult(code, rank, False, host, lines)
    return JobResult(exit_code_of(proc.returncode), None, False)


# What a rank prints when it fails only because a peer went away (gloo, NCCL, MPI): such a rank
# may report before the rank that caused it, which is still printing its traceback.
PEER_LOSS = re.compile(r"Connection closed by peer|Connection reset by peer|remote worker crashing|"
                       r"remote process exited|Broken pipe|NCCL communicator was aborted", re.IGNORECASE)


def _root_cause(failures: list[tuple[str, int, str | None, tuple[str, ...]]]) -> tuple[str, int, str | None, tuple[str, ...]]:
    """The first failure that is not only the echo of a lost peer (else the first one)."""
    for failure in failures:
        if not any(PEER_LOSS.search(line) for line in failure[3]):
            return failure
    return failures[0]


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group (the ranks it started on this host)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_once(plan: LaunchPlan, grace_s: float = 15.0, failure_grace_s: float = 5.0) -> JobResult:
    """One attempt of the job (no restart), with the first failing rank when one reported."""
    return _run_once(plan, grace_s, failure_grace_s)
