"""Real multi-process jobs through `auroragpt launch`: mpiexec from the mpich wheel (with mpi4py)
and the torchrun path, each with a checked all-reduce; a crashing rank; retries; SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from dist_cli_helpers import BIN, child_env, run_cli

WORKER = str(Path(__file__).with_name("dist_allreduce_worker.py"))


def test_mpiexec_two_ranks_selfcheck_demo() -> None:
    """The demo job: mpiexec (hydra) + mpi4py agree on MASTER_ADDR/PORT; all-reduce and DDP checked."""
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--", sys.executable, "-m",
                     "auroragpt.dist.selfcheck", timeout=180)
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


def test_crashing_rank_stops_the_job_and_is_named() -> None:
    script = ("import os, sys, time\nrank = int(os.environ['PMI_RANK'])\nprint('started', flush=True)\n"
              "if rank == 1:\n    sys.exit(3)\ntime.sleep(120)\n")
    started = time.monotonic()
    result = run_cli("launch", "-n", "2", "--launcher", "mpiexec", "--", sys.executable, "-c", script, timeout=90)
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


def test_sigint_reaches_every_rank() -> None:
    script = ("import signal, sys, time\n"
              "def stop(*_):\n    print('got SIGINT', flush=True)\n    sys.exit(7)\n"
              "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([str(BIN / "auroragpt"), "launch", "-n", "2", "--launcher", "mpiexec", "--",
                             sys.executable, "-c", script], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready: set[str] = set()
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while len(ready) < 2 and time.monotonic() < deadline:
            out_line = proc.stdout.readline()
            if out_line.rstrip().endswith("ready"):
                ready.add(out_line.split("]")[0])
        assert len(ready) == 2, "ranks did not start"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, out + err
    assert "[rank 0] got SIGINT" in out and "[rank 1] got SIGINT" in out, out + err
    assert "interrupted" in err


def test_unknown_mpi_launcher_falls_back_to_mpi4py() -> None:
    """An MPI that sets none of the rank variables we know (only its PMI connection): ask mpi4py."""
    script = (
        "import os\nfrom auroragpt.dist.env import LAUNCHER_VARIABLES, read_rank_info\n"
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
