"""A real one-node Slurm cluster for tests: slurmctld + slurmd on this host, munge auth.

Reuses a cluster that already answers `sinfo`; otherwise, as root, installs Debian's `slurm-wlm`
and `munge` when missing, writes a minimal slurm.conf for this host (no cgroups: linuxproc process
tracking, task/none) and starts the daemons. The tests that need it skip with the reason when any
of that is impossible (not root, no apt, the daemons do not come up). Daemons this module started
are stopped at the end of the session; a cluster it found running is left alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

MARKER = "# written by auroragpt tests/slurm_cluster.py"
FOREIGN_PREFIXES = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "PALS_", "MPI_LOCAL", "TORCHELASTIC_", "AURORAGPT_", "PBS_")
FOREIGN_NAMES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
CONF = Path("/etc/slurm/slurm.conf")
STATE = Path("/var/tmp/auroragpt-slurm")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


@dataclasses.dataclass
class SlurmCluster:
    """A cluster that answers sbatch/srun; `submit` runs a batch script and waits for it."""

    host: str
    started: list[int] = dataclasses.field(default_factory=list)  # pids of daemons we started

    def submit(self, script: str, workdir: Path, *options: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
        """Submit the script from `workdir` and wait for it (every task of an array); returns sbatch's
        result with the job's exit code, the highest of its tasks', as `sbatch --wait` gives it.

        Polled here every 0.2 s: `sbatch --wait` sleeps 2 s, then 8, then 32 between its checks, so
        a 3 s job took 10 s and an 11 s one 42 s. The job gets this process's environment minus
        launcher and rendezvous variables (another test's MASTER_ADDR would send the ranks to a host
        that does not exist); a job still running at the timeout is cancelled, so it cannot hold
        the node's CPUs for the next test.
        """
        path = workdir / "job.sh"
        path.write_text(script)
        name = f"agtest-{uuid.uuid4().hex[:8]}"
        argv = ["sbatch", "--parsable", f"--job-name={name}", f"--chdir={workdir}", *options, str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES) and k not in FOREIGN_NAMES}
        deadline = time.monotonic() + timeout
        submitted = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env)
        if submitted.returncode != 0:
            return submitted
        job = submitted.stdout.strip().split(";")[0]
        while True:
            shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
            states = re.findall(r"\bJobState=(\S+)", shown.stdout)
            if states and all(state in TERMINAL for state in states):
                break
            if time.monotonic() > deadline:
                subprocess.run(["scancel", f"--name={name}"], capture_output=True)
                raise subprocess.TimeoutExpired(argv, timeout)
            time.sleep(0.2)
        codes = [(int(code), int(signum)) for code, signum in re.findall(r"\bExitCode=(\d+):(\d+)", shown.stdout)]
        worst = max((code or (128 + signum if signum else 0)) for code, signum in codes)
        return subprocess.CompletedProcess(argv, worst, submitted.stdout, submitted.stderr + shown.stdout)


def _run(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _node_state() -> str | None:
    """The node's state as `sinfo` reports it, or None when no controller answers."""
    result = _run(["sinfo", "-h", "-o", "%T"], timeout=5)
    if result is None or result.returncode != 0 or not result.stdout.strip():
        return None
    return result.stdout.split()[0]


def _install() -> str | None:
    """apt-get install slurm-wlm munge; returns a reason when it cannot."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return None
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install slurm-wlm"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    for attempt in range(2):
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode == 0:
            return None
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
    return f"apt-get install slurm-wlm munge failed: {done.stderr.strip()[-300:]}"


def _write_conf(host: str) -> str | None:
    """A one-node config. A batch job starts about a second after sbatch instead of three: the
    default batch_sched_delay (3 s) batches submissions for a busy controller, which this one is not."""
    if CONF.exists() and MARKER not in CONF.read_text(errors="replace"):
        return f"{CONF} exists and was not written by the tests; not overwriting a real cluster's config"
    cpus = min(os.cpu_count() or 1, 2)
    for sub in ("ctld", "d", "log"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(f"""{MARKER}
ClusterName=auroragpt
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
StateSaveLocation={STATE}/ctld
SlurmdSpoolDir={STATE}/d
SlurmctldPidFile={STATE}/slurmctld.pid
SlurmdPidFile={STATE}/slurmd.pid
SlurmctldLogFile={STATE}/log/slurmctld.log
SlurmdLogFile={STATE}/log/slurmd.log
MaxArraySize=1001
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return None


def _start_daemons(cluster: SlurmCluster) -> str | None:
    if _run(["pgrep", "-x", "munged"]).returncode != 0:  # type: ignore[union-attr]
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "munge:munge", "/run/munge"], capture_output=True)
        munge = subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True, text=True)
        if munge.returncode != 0:
            munge = subprocess.run(["munged", "--force"], capture_output=True, text=True)
        if munge.returncode != 0:
            return f"munged did not start: {munge.stderr.strip()[-300:]}"
        found = _run(["pgrep", "-x", "munged"])
        cluster.started += [int(pid) for pid in (found.stdout.split() if found else [])]
    for daemon in ("slurmctld", "slurmd"):
        started = subprocess.run([daemon], capture_output=True, text=True)
        if started.returncode != 0:
            return f"{daemon} did not start: {started.stderr.strip()[-300:]}"
        pidfile = STATE / f"{daemon}.pid"
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                cluster.started.append(int(pidfile.read_text()))
                break
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = _node_state()
        if state and state.rstrip("*~#") in ("idle", "mixed", "allocated"):
            return None
        if state and state.startswith(("down", "drain")):
            _run(["scontrol", "update", f"nodename={cluster.host}", "state=resume"])
        time.sleep(0.5)
    log = (STATE / "log" / "slurmd.log")
    tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
    return f"the Slurm node did not become idle within 30 s (state {_node_state()}); slurmd log: {tail}"


def start_cluster() -> tuple[SlurmCluster | None, str]:
    """A running cluster, or None and the reason there is none."""
    host = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(host)
    if _node_state() is not None:
        return cluster, "reused"
    if os.geteuid() != 0:
        return None, "no Slurm cluster answers sinfo and starting one needs root"
    for step in (_install, lambda: _write_conf(host), lambda: _start_daemons(cluster)):
        reason = step()
        if reason:
            stop_cluster(cluster)
            return None, reason
    return cluster, "started"


def stop_cluster(cluster: SlurmCluster) -> None:
    """Stop only the daemons this module started."""
    for pid in reversed(cluster.started):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    cluster.started.clear()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster on this host (skips with the reason when none can run)."""
    cluster, reason = start_cluster()
    if cluster is None:
        pytest.skip(f"no Slurm cluster: {reason}")
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
