"""Build the exact command that starts N ranks, from the allocation the job runs in.

Under PBS: PALS `mpiexec --envall --np --ppn` with a hostfile (CPU binding per profile; Aurora's
per-tile binding is `aurora`). Under Slurm: `srun --nodes --ntasks`. Anywhere else: `mpiexec` when
one is on PATH (several hosts from --hostfile: MPICH's hydra gets `-ppn -hosts/-f`, Open MPI,
recognised from `mpiexec --version`, gets `--map-by ppr:P:node --host` and `-x` for the variables
the ranks need), else torch's elastic launcher on this host (`python -m auroragpt.runtime.elastic`).

Every rank runs through `auroragpt.runtime.rank_exec`, which prefixes its output with the rank and
reports its exit code, so the launcher can say which rank failed first. `build_launch_plan` only
computes and validates (inconsistent choices raise LaunchError before anything starts);
`auroragpt.runtime.runner` runs the plan.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from auroragpt.runtime.scheduler import Allocation, detect_allocation, is_plain_hostfile, read_hostfile
from auroragpt.errors import LaunchError

LAUNCHERS = ("auto", "mpiexec", "srun", "torchrun")

# Named CPU-binding profiles: per local rank, the cores it may use. "aurora" gives each of the
# 12 GPU tiles of an Aurora node 8 cores, skipping cores 0 and 52 that the OS keeps for itself.
BIND_PROFILES: dict[str, tuple[str, ...]] = {
    "aurora": ("1-8", "9-16", "17-24", "25-32", "33-40", "41-48",
               "53-60", "61-68", "69-76", "77-84", "85-92", "93-100"),
    "none": (),
}
BIND_CHOICES = ("auto", *BIND_PROFILES)


def _highest_core(profile: tuple[str, ...]) -> int:
    return max((int(part.split("-")[-1]) for part in profile), default=-1)


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for; None means "derive it from the allocation"."""

    command: tuple[str, ...]
    nprocs: int | None = None
    ppn: int | None = None
    nhosts: int | None = None
    hostfile: str | None = None
    launcher: str = "auto"
    bind: str = "auto"


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """The resolved job: what runs, where, and how many ranks."""

    argv: tuple[str, ...]
    launcher: str
    scheduler: str
    hosts: tuple[str, ...]
    nprocs: int
    ppn: int
    bind: str

    def shell_line(self) -> str:
        import shlex

        return shlex.join(self.argv)


def rank_exec_prefix() -> tuple[str, ...]:
    """How each rank starts the user's command: through the output-prefixing wrapper."""
    return (sys.executable, "-m", "auroragpt.runtime.rank_exec", "--")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise LaunchError(f"{name} {value} must be a positive number", hint=f"pass {name} 1 or more, or leave it out")


# Variables an Open MPI job must pass on by name (-x); MPICH hydra and PALS pass the whole
# environment. Prefixes end in "_"; the rest are exact names.
OPENMPI_FORWARD = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS",
                   "MASTER_ADDR", "MASTER_PORT", "AURORAGPT_", "NCCL_", "TORCH_", "CUDA_VISIBLE_DEVICES")


def mpiexec_flavour(path: str | None) -> str:
    """Which MPI an `mpiexec` belongs to, from its --version banner ("unknown" when it cannot say)."""
    if not path:
        return "unknown"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for marker, name in (("HYDRA", "MPICH hydra"), ("Open MPI", "Open MPI"), ("OpenRTE", "Open MPI"),
                         ("PALS", "PALS"), ("Intel", "Intel MPI")):
        if marker in out:
            return name
    return "unknown"


def _openmpi_argv(nprocs: int, ppn: int, hosts: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """Open MPI spells hosts, ranks per host and environment forwarding its own way."""
    argv = ["mpiexec", "-n", str(nprocs), "--map-by", f"ppr:{ppn}:node",
            "--host", ",".join(f"{host}:{ppn}" for host in hosts)]
    for name in sorted(env):
        if any(name == want or (want.endswith("_") and name.startswith(want)) for want in OPENMPI_FORWARD):
            argv += ["-x", name]
    return argv


def _choose_launcher(requested: str, scheduler: str, env: Mapping[str, str]) -> str:
    if requested not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {requested!r}", hint=f"use one of {', '.join(LAUNCHERS)}")
    if requested != "auto":
        return requested
    if scheduler == "slurm":
        return "srun"
    if scheduler == "pbs" or shutil.which("mpiexec", path=env.get("PATH")):
        return "mpiexec"
    return "torchrun"


def _resolve_bind(bind: str, scheduler: str, launcher: str, ppn: int, host_cpus: int) -> str:
    """"auto" means Aurora's per-tile binding for PALS mpiexec under PBS on a node whose CPUs it
    names (Aurora: 208); another PBS machine (Polaris: 64 CPUs) gets none rather than cores it lacks."""
    if bind not in BIND_CHOICES:
        raise LaunchError(f"unknown CPU-binding profile {bind!r}", hint=f"use one of {', '.join(BIND_CHOICES)}")
    if bind == "auto":
        aurora = BIND_PROFILES["aurora"]
        fits = ppn <= len(aurora) and host_cpus > _highest_core(aurora)
        return "aurora" if scheduler == "pbs" and launcher == "mpiexec" and fits else "none"
    cores = BIND_PROFILES[bind]
    if cores and (scheduler != "pbs" or launcher != "mpiexec"):
        raise LaunchError(f"the {bind!r} CPU-binding profile is written for PALS mpiexec under PBS, "
                          f"not for {launcher} under {scheduler}", hint="use --bind none (or auto)")
    if cores and ppn > len(cores):
        raise LaunchError(f"the {bind!r} CPU-binding profile binds at most {len(cores)} ranks per host, "
                          f"but --ppn is {ppn}", hint=f"use --ppn {len(cores)} or less, or --bind none")
    return bind


def build_launch_plan(request: LaunchRequest, env: Mapping[str, str] | None = None,
                      default_ppn: int = 1, host_cpus: int | None = None,
                      mpi_flavour: str | None = None) -> LaunchPlan:
    """Resolve ranks, hosts and launcher, validate them together, and build the command line.

    `default_ppn` is the ranks per host when neither --ppn nor -n says otherwise (the number of
    accelerators a node has); `host_cpus` the CPUs of a node (default: this one's), which decides
    whether Aurora's binding fits; `mpi_flavour` the MPI behind `mpiexec` (default: asked from
    the one on PATH when its host flags are needed). Inconsistent choices raise LaunchError
    before anything starts.
    """
    env = os.environ if env is None else env
    host_cpus = (os.cpu_count() or 1) if host_cpus is None else host_cpus
    if not request.command:
        raise LaunchError("no command to launch", hint="put the command after `--`, e.g. "
                          "`auroragpt launch -n 2 -- python -m auroragpt.runtime.selfcheck`")
    for name, value in (("-n", request.nprocs), ("--ppn", request.ppn), ("--nhosts", request.nhosts)):
        _positive(name, value)
    allocation = detect_allocation(env)
    scheduler = allocation.scheduler
    if request.hostfile is not None:
        hosts = read_hostfile(request.hostfile)
        allocation = Allocation(scheduler, hosts, f"--hostfile {request.hostfile}", request.hostfile)
    launcher = _choose_launcher(request.launcher, scheduler, env)
    nprocs, ppn, nhosts = _resolve_counts(request, allocation, default_ppn)
    if launcher == "torchrun" and nhosts > 1:
        raise LaunchError(f"the torchrun launcher starts ranks on this host only, but the job needs {nhosts} hosts",
                          hint="use --launcher mpiexec (PBS, or any MPI) or srun (Slurm) for several hosts")
    hosts = allocation.hosts[:nhosts]
    many_hosts = scheduler != "none" or request.hostfile is not None or nhosts > 1
    if launcher == "mpiexec" and many_hosts and mpi_flavour is None:
        mpi_flavour = mpiexec_flavour(shutil.which("mpiexec", path=env.get("PATH")))
    openmpi = launcher == "mpiexec" and many_hosts and mpi_flavour == "Open MPI"
    bind = _resolve_bind(request.bind, scheduler, "mpiexec (Open MPI)" if openmpi else launcher, ppn, host_cpus)
    # A file is passed on only as MPI reads it: bare host names (no comments, no slot counts).
    whole_file = (allocation.hostfile is not None and nhosts == len(allocation.hosts)
                  and is_plain_hostfile(allocation.hostfile))
    wrapped = rank_exec_prefix() + tuple(request.command)
    if openmpi:
        argv = _openmpi_argv(nprocs, ppn, hosts, env)
    elif launcher == "mpiexec" and scheduler == "pbs":
        argv = ["mpiexec", "--envall", "--np", str(nprocs), "--ppn", str(ppn)]
        argv += ["--hostfile", allocation.hostfile] if whole_file else ["--hosts", ",".join(hosts)]
        if BIND_PROFILES[bind]:
            argv += ["--cpu-bind", "list:" + ":".join(BIND_PROFILES[bind][:ppn])]
    elif launcher == "mpiexec":
        argv = ["mpiexec", "-n", str(nprocs)]
        if many_hosts:
            argv += ["-ppn", str(ppn)]
            argv += ["-f", allocation.hostfile] if whole_file else ["-hosts", ",".join(hosts)]
    elif launcher == "srun":
        argv = ["srun", "--nodes", str(nhosts), "--ntasks", str(nprocs), "--ntasks-per-node", str(ppn),
                "--kill-on-bad-exit=1"]
        if request.hostfile is not None:
            argv += ["--nodelist", ",".join(hosts)]
    else:
        argv = [sys.executable, "-m", "auroragpt.runtime.elastic", "--standalone", "--nnodes", "1",
                "--nproc-per-node", str(nprocs), "--no-python"]
    return LaunchPlan(tuple(argv) + wrapped, launcher, scheduler, hosts, nprocs, ppn, bind)


def _resolve_counts(request: LaunchRequest, allocation: Allocation, default_ppn: int) -> tuple[int, int, int]:
    """(nprocs, ppn, nhosts) consistent with each other and with the allocation."""
    available = len(allocation.hosts)
    if request.nhosts is not None and request.nhosts > available:
        raise LaunchError(f"--nhosts {request.nhosts} asks for more hosts than the {available} in "
                          f"{allocation.source}", hint=f"use --nhosts {available} or less, or get a larger allocation")
    single_machine = allocation.scheduler == "none" and request.hostfile is None
    ppn = request.ppn
    if ppn is None:
        ppn = request.nprocs if single_machine and request.nprocs else (allocation.ranks_per_host or max(default_ppn, 1))
    max_hosts = request.nhosts or available
    slots = max_hosts * ppn
    nprocs = request.nprocs
    if nprocs is None:
        # The allocation's own rank count, when it stated one and nothing narrower was asked for.
        whole = request.ppn is None and request.nhosts is None and allocation.ranks is not None
        nprocs = min(allocation.ranks, slots) if whole else slots
    if nprocs > slots:
        raise LaunchError(
            f"-n {nprocs} asks for more ranks than the allocation has slots: {max_hosts} host(s) x {ppn} "
            f"ranks per host = {slots} (hosts from {allocation.source})",
            hint=f"use -n {slots} or less, raise --ppn, or get more hosts",
        )
    nhosts = request.nhosts if request.nhosts is not None else -(-nprocs // ppn)
    if nprocs <= (nhosts - 1) * ppn:
        raise LaunchError(
            f"-n {nprocs} with --ppn {ppn} fills only {-(-nprocs // ppn)} host(s), but --nhosts is {nhosts}",
            hint=f"use -n {nhosts * ppn} to fill {nhosts} hosts, or --nhosts {-(-nprocs // ppn)}",
        )
    return nprocs, ppn, nhosts
