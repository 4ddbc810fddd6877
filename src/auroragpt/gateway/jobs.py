"""Backend jobs on one site: submit, poll and cancel, for local processes, Slurm and PBS.

Every job runs `jobmain` (free port, endpoint file, then `auroragpt serve`) with a fresh API key
in a 0600 file of the gateway's state folder (a shared file system on a cluster). `status` answers
"queued" (waiting in the scheduler), "started" (the job runs; the server may still be loading)
or "gone"; the pool turns "started" into "running" once the backend's /health answers.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from auroragpt import pids
from auroragpt.errors import LaunchError
from auroragpt.gateway.config import ModelSpec, Site


@dataclass
class Job:
    """One backend job the gateway owns (what the state file stores)."""

    id: str
    model: str
    site: str
    token: str  # names the job's key, endpoint and log files
    state: str = "queued"  # queued | starting | running
    host: str | None = None
    port: int | None = None
    submitted_at: float = field(default_factory=time.time)
    running_since: float | None = None
    replaced_by: str | None = None  # the job started to take over before this one's walltime ends
    draining: bool = False  # gets no new requests; cancelled once its in-flight ones are done
    note: str | None = None  # why it runs where it does, when another site failed first

    def to_dict(self) -> dict:
        return asdict(self)


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LaunchError(f"{what}: `{shlex.join(cmd)}` failed: {err}") from None
    if done.returncode != 0:
        raise LaunchError(f"{what}: `{shlex.join(cmd)}` exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class Scheduler:
    """Base: file layout and the job command line; subclasses submit, poll and cancel."""

    bind = "0.0.0.0"

    def __init__(self, site: Site, state_dir: Path) -> None:
        self.site = site
        self.folder = state_dir / "jobs"
        self.python = site.python or sys.executable

    def files(self, token: str) -> tuple[Path, Path, Path]:
        """(key file, endpoint file, log file) of a job."""
        return (self.folder / f"{token}.key", self.folder / f"{token}.endpoint.json", self.folder / f"{token}.log")

    def key(self, token: str) -> str:
        return self.files(token)[0].read_text().strip()

    def _prepare(self, spec: ModelSpec) -> tuple[str, list[str]]:
        """A new token with its key file written, and the command the job runs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        token = f"{spec.name}-{secrets.token_hex(4)}"
        key_file, endpoint, _ = self.files(token)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("sk-job-" + secrets.token_urlsafe(24))
        serve = [spec.path, "--model-name", spec.name, *spec.serve_args]
        if spec.engine == "vllm":
            serve += ["--engine", "vllm"]
        cmd = [self.python, "-m", "auroragpt.gateway.jobmain", "--endpoint-file", str(endpoint),
               "--key-file", str(key_file), "--bind", self.bind, "--", *serve]
        return token, cmd

    def cleanup(self, token: str) -> None:
        for path in self.files(token)[:2]:
            path.unlink(missing_ok=True)

    def submit(self, spec: ModelSpec) -> Job:
        token, cmd = self._prepare(spec)
        try:
            return self.launch(token, cmd, spec.name)
        except BaseException:
            self.cleanup(token)  # a refused submission leaves no key behind
            raise

    def launch(self, token: str, cmd: list[str], model: str, extra_args: tuple[str, ...] = ()) -> Job:
        """Start `cmd` as a job whose log is this token's (a backend server, or a batch run); `extra_args`
        go to sbatch/qsub after the site's submit_args."""
        raise NotImplementedError

    def status(self, job: Job) -> str:
        raise NotImplementedError

    def cancel(self, job: Job) -> None:
        raise NotImplementedError


class LocalScheduler(Scheduler):
    """Jobs as processes on this machine, each in its own session so a restarted gateway finds them alive."""

    bind = "127.0.0.1"

    def launch(self, token: str, cmd: list[str], model: str, extra_args: tuple[str, ...] = ()) -> Job:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.files(token)[2], "ab")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        log.close()
        return Job(id=f"local-{proc.pid}", model=model, site=self.site.name, token=token, state="starting")

    @staticmethod
    def _pid(job: Job) -> int:
        return int(job.id.split("-", 1)[1])

    def status(self, job: Job) -> str:
        pid = self._pid(job)
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
            if done == pid:
                return "gone"
        except ChildProcessError:
            pass  # not our child (a job started before a restart): ask the kernel
        return "started" if pids.alive(pid) else "gone"

    def cancel(self, job: Job, grace_s: float = 10.0) -> None:
        """SIGTERM the job's process group; SIGKILL it after `grace_s`; reap it when it is our child."""
        pid = self._pid(job)
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.status(job) == "gone":
                return
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5.0  # SIGKILL is not instant; a child not reaped stays a zombie
        while self.status(job) != "gone" and time.monotonic() < deadline:
            time.sleep(0.05)


class SlurmScheduler(Scheduler):
    """sbatch / squeue / scancel."""

    def script(self, token: str, cmd: list[str]) -> str:
        log = self.files(token)[2]
        return "\n".join(["#!/bin/bash", f"#SBATCH --job-name=agpt-{token}", f"#SBATCH --output={log}",
                          "#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"exec {shlex.join(cmd)}", ""])

    def launch(self, token: str, cmd: list[str], model: str, extra_args: tuple[str, ...] = ()) -> Job:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{token}.sbatch"
        path.write_text(self.script(token, cmd))
        out = _run(["sbatch", "--parsable", *self.site.submit_args, *extra_args, str(path)], f"submitting {model}")
        return Job(id=out.strip().split(";")[0], model=model, site=self.site.name, token=token)

    def status(self, job: Job) -> str:
        try:
            out = _run(["squeue", "-h", "-j", job.id, "-o", "%T"], "polling").strip()
        except LaunchError as err:
            return "gone" if "Invalid job id" in str(err) else "queued"  # a scheduler hiccup is not a death
        if out in ("PENDING", "CONFIGURING", "REQUEUED"):
            return "queued"
        if out in ("RUNNING", "COMPLETING"):
            return "started"
        return "gone"

    def cancel(self, job: Job) -> None:
        try:
            _run(["scancel", job.id], f"cancelling {job.id}")
        except LaunchError:
            pass


class PBSScheduler(Scheduler):
    """qsub / qstat / qdel."""

    def script(self, token: str, cmd: list[str]) -> str:
        log = self.files(token)[2]
        return "\n".join(["#!/bin/bash", f"#PBS -N agpt-{token[:10]}", f"#PBS -o {log}", "#PBS -j oe",
                          "#PBS -l select=1", f"exec {shlex.join(cmd)}", ""])

    def launch(self, token: str, cmd: list[str], model: str, extra_args: tuple[str, ...] = ()) -> Job:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{token}.pbs"
        path.write_text(self.script(token, cmd))
        out = _run(["qsub", *self.site.submit_args, *extra_args, str(path)], f"submitting {model}")
        return Job(id=out.strip(), model=model, site=self.site.name, token=token)

    def status(self, job: Job) -> str:
        try:
            out = _run(["qstat", "-x", "-f", job.id], "polling")
        except LaunchError as err:
            return "gone" if "Unknown Job" in str(err) else "queued"
        state = next((line.split("=", 1)[1].strip() for line in out.splitlines() if "job_state" in line), "")
        return {"Q": "queued", "H": "queued", "W": "queued", "R": "started", "B": "started"}.get(state, "gone")

    def cancel(self, job: Job) -> None:
        try:
            _run(["qdel", job.id], f"cancelling {job.id}")
        except LaunchError:
            pass


def scheduler_for(site: Site, state_dir: Path) -> Scheduler:
    return {"local": LocalScheduler, "slurm": SlurmScheduler, "pbs": PBSScheduler}[site.scheduler](site, state_dir)
