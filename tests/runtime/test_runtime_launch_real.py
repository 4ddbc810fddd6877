"""Real multi-process jobs through `auroragpt launch`: mpiexec from the mpich wheel (with mpi4py)
and the torchrun path, each with a checked all-reduce; a crashing rank; retries; SIGINT."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime_cli_helpers import BIN, child_env, run_cli

WORKER = str(Path(__file__).with_name("runtime_allreduce_worker.py"))


class LineReader:
    """Lines of a child's pipe, read by a daemon thread, so that waiting for one obeys a deadline
    (a blocking readline() would wait past any deadline for a child that prints nothing)."""

    def __init__(self, stream) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._done = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next line, or None at end of output or when `deadline` (time.monotonic) passes."""
        if self._done:
            return None
        try:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return None
        if line is None:
            self._done = True
            return None
        self._seen.append(line)
        return line

    def text(self, deadline: float | None = None) -> str:
        """Everything read so far; with a deadline, first the rest up to end of output."""
        if deadline is not None:
            while self.next_line(deadline) is not None:
                pass
        return "".join(self._seen)


def test_mpiexec_two_ranks_selfcheck_demo() -> None:
    """The demo job: mpiexec (hydra) + mpi4py agree on MASTER_ADDR/PORT; all-reduce and DDP checked."""
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--", sys.executable, "-m",
                     "auroragpt.runtime.selfcheck", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[rank 0] topology: 2 rank(s) on 1 host(s)" in out
    assert re.search(r"\[rank 0\] 1\s+1\s+\S+\s+cpu\s+gloo\s+mpich", out), out
    assert "[rank 0] all-reduce: ok (sum over 2 ranks)" in out
    assert "[rank 0] ddp: ok" in out and "[rank 0] selfcheck: passed" in out
    assert "Traceback" not in result.stderr


def test_torchrun_two_ranks_allreduce() -> None:
    result = run_cli("launch", "-n", "2", "--launcher", "torchrun", "--", sys.executable, WORKER, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        assert re.search(rf"\[rank {rank}\] allreduce rank={rank} world=2 local={rank}/2 nodes=1 "
                         r"launcher=torchrun backend=gloo master=\S+ sum=3.0 ok", result.stdout), result.stdout


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_crashing_rank_stops_the_job_and_is_named(launcher: str) -> None:
    script = ("import os, sys, time\nrank = int(os.environ.get('PMI_RANK') or os.environ['RANK'])\n"
              "print('started', flush=True)\nif rank == 1:\n    sys.exit(3)\ntime.sleep(120)\n")
    started = time.monotonic()
    result = run_cli("launch", "-n", "2", "--launcher", launcher, "--", sys.executable, "-c", script, timeout=90)
    assert time.monotonic() - started < 60, "the surviving rank was not stopped"
    assert result.returncode == 3, result.stdout + result.stderr
    assert "auroragpt launch: rank 1 failed first, with exit code 3" in result.stderr
    assert "[rank 0] started" in result.stdout and "[rank 1] started" in result.stdout
    assert "Traceback" not in result.stderr


def test_missing_program_on_a_rank() -> None:
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--", "no-such-program-auroragpt", timeout=60)
    assert result.returncode == 127, result.stdout + result.stderr
    assert re.search(r"rank [01] failed first, with exit code 127", result.stderr)
    assert "cannot start 'no-such-program-auroragpt'" in result.stderr


def test_retries_restart_a_failed_job(tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    script = (f"import os, sys, pathlib\np = pathlib.Path({str(marker)!r})\n"
              "if os.environ['PMI_RANK'] == '0' and not p.exists():\n    p.write_text('1')\n    sys.exit(5)\n"
              "print('attempt ok', flush=True)\n")
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--retries", "1", "--", sys.executable, "-c",
                     script, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0 failed first, with exit code 5" in result.stderr
    assert "restarting the job (attempt 2 of 2)" in result.stderr
    assert "[rank 0] attempt ok" in result.stdout and "[rank 1] attempt ok" in result.stdout


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_reaches_every_rank_once(launcher: str, signum: int) -> None:
    """A checkpoint-on-SIGTERM handler must run once: a second delivery would interrupt it."""
    name = signal.Signals(signum).name
    script = ("import signal, sys, time\ncount = 0\n"
              f"def stop(*_):\n    global count\n    count += 1\n    print('got {name} #%d' % count, flush=True)\n"
              f"signal.signal(signal.{name}, stop)\nprint('ready', flush=True)\n"
              "while count == 0:\n    time.sleep(0.05)\ntime.sleep(1.5)\nsys.exit(7)\n")
    proc = subprocess.Popen([str(BIN / "auroragpt"), "launch", "-n", "2", "--launcher", launcher, "--",
                             sys.executable, "-c", script], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = LineReader(proc.stdout), LineReader(proc.stderr)
        ready: set[str] = set()
        deadline = time.monotonic() + 60
        while len(ready) < 2:
            out_line = stdout.next_line(deadline)  # None at the deadline or at end of output
            if out_line is None:
                break
            if out_line.rstrip().endswith("ready"):
                ready.add(out_line.split("]")[0])
        assert len(ready) == 2, f"ranks did not start: {stdout.text()}{stderr.text()}"
        proc.send_signal(signum)
        proc.wait(timeout=60)
        out, err = stdout.text(time.monotonic() + 10), stderr.text(time.monotonic() + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signum, out + err
    assert f"[rank 0] got {name} #1" in out and f"[rank 1] got {name} #1" in out, out + err
    assert "#2" not in out, out + err
    assert "interrupted" in err and "Traceback" not in err, err


def test_unknown_mpi_launcher_falls_back_to_mpi4py() -> None:
    """An MPI that sets none of the rank variables we know (only its PMI connection): ask mpi4py."""
    script = (
        "import os\nfrom auroragpt.runtime.env import LAUNCHER_VARIABLES, read_rank_info\n"
        "known = {n for v in LAUNCHER_VARIABLES.values() for f in (v.rank, v.world_size, v.local_rank, "
        "v.local_world_size) for n in f}\n"
        "env = {k: v for k, v in os.environ.items() if k not in known}\n"
        "i = read_rank_info(env)\n"
        "print(f'{i.launcher} rank={i.rank}/{i.world_size} local={i.local_rank}/{i.local_world_size} "
        "pmi={os.environ[\"PMI_RANK\"]}', flush=True)\n"
    )
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--", sys.executable, "-c", script, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        assert f"[rank {rank}] mpi4py rank={rank}/2 local={rank}/2 pmi={rank}" in result.stdout, result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and PR_SET_PDEATHSIG are Linux features")
def test_rank_command_has_its_own_group_and_dies_with_its_wrapper() -> None:
    """Signals sent to the wrapper's process group (as mpiexec and torchrun do) must not reach the
    command directly as well (it gets the wrapper's forwarded copy), and killing the wrapper
    outright must not leave the command running as an orphan."""
    import os

    script = "import os, time\nprint(os.getpid(), os.getpgid(0), flush=True)\ntime.sleep(60)\n"
    wrapper = subprocess.Popen([sys.executable, "-m", "auroragpt.runtime.rank_exec", "--", sys.executable, "-c", script],
                               env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        first = LineReader(wrapper.stdout).next_line(time.monotonic() + 60)
        assert first is not None, "the command printed nothing within 60 s"
        pid, pgid = (int(x) for x in first.split("]")[1].split())
        assert pgid == pid != os.getpgid(wrapper.pid)
        wrapper.kill()
        wrapper.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                break
            if "\nState:\tZ" in state:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the command outlived its killed wrapper")
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
