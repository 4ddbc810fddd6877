"""Which batch scheduler gave us nodes (PBS, Slurm or none) and which hosts they are.

Reads only what the scheduler exported (PBS_JOBID/PBS_NODEFILE, SLURM_JOB_ID/SLURM_JOB_NODELIST)
and hostfiles; every malformed input becomes a LaunchError that names the file or variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from auroragpt.errors import LaunchError

SCHEDULER_VARIABLES: dict[str, tuple[str, ...]] = {
    # scheduler -> (job id variable, host list variable)
    "pbs": ("PBS_JOBID", "PBS_NODEFILE"),
    "slurm": ("SLURM_JOB_ID", "SLURM_JOB_NODELIST"),
}


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The hosts a job may use, and where that list came from (for error messages)."""

    scheduler: str  # "pbs", "slurm" or "none"
    hosts: tuple[str, ...]
    source: str  # e.g. "PBS_NODEFILE=/var/spool/pbs/aux/123" or "this machine"
    hostfile: str | None = None  # a file listing exactly `hosts`, when there is one
    # The layout the job was submitted with, when the scheduler states one (sbatch -n/--ntasks-per-node,
    # PBS mpiprocs); None leaves ranks per host to the accelerators a node has.
    ranks_per_host: int | None = None
    ranks: int | None = None


def detect_scheduler(env: Mapping[str, str] | None = None) -> str:
    """"pbs", "slurm" or "none", from the job id variables the scheduler exports."""
    env = os.environ if env is None else env
    for name, (job_id, _) in SCHEDULER_VARIABLES.items():
        if env.get(job_id):
            return name
    return "none"


_HOSTFILE_ENTRY = re.compile(r"[A-Za-z0-9_.\-]+(?::\d+)?")
_SLOTS = re.compile(r"(?:max[-_])?slots=\d+")
_BARE_HOST = re.compile(r"[A-Za-z0-9_.\-]+")


def is_plain_hostfile(path: str | os.PathLike[str]) -> bool:
    """True when every line is a bare host name, the only form every MPI's hostfile option reads."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return all(_BARE_HOST.fullmatch(line.strip()) for line in lines if line.strip())


def read_hostfile(path: str | os.PathLike[str], what: str = "hostfile") -> tuple[str, ...]:
    """Distinct host names in file order. Blank lines and '#' comments are skipped; a host may be
    followed by slot counts ("x1 slots=12" or "x1:12"), which are ignored here."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"{what} {path} does not exist (or is not a file)",
                          hint="pass an existing file with one host name per line, or leave the option out "
                          "to use the scheduler's allocation")
    hosts: dict[str, None] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, *rest = line.split()
        host = first.split(":")[0]
        if not _HOSTFILE_ENTRY.fullmatch(first) or not all(_SLOTS.fullmatch(word) for word in rest):
            raise LaunchError(f"{what} {path} line {number}: {raw.strip()!r} is not a host name",
                              hint="write one host name per line (letters, digits, '.', '-', '_'), "
                              "optionally followed by slots=N or written host:N")
        hosts.setdefault(host, None)
    if not hosts:
        raise LaunchError(f"{what} {path} is empty: it lists no hosts",
                          hint="write one host name per line, or leave the option out to use the allocation")
    return tuple(hosts)


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm node list such as "x[1000-1003,1007],y[01-02]" (zero padding kept)."""
    text = nodelist.strip()
    hosts: list[str] = []
    position = 0
    pattern = re.compile(r"([A-Za-z0-9_.\-]*)(?:\[([^\[\]]*)\])?([A-Za-z0-9_.\-]*)")
    while position < len(text):
        match = pattern.match(text, position)
        if match is None or match.end() == position:
            raise _bad_nodelist(nodelist, f"unexpected {text[position]!r} at character {position + 1}")
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            hosts.append(prefix + suffix)
        else:
            if not prefix:
                raise _bad_nodelist(nodelist, "a bracket range needs a host name prefix")
            hosts.extend(f"{prefix}{number}{suffix}" for number in _expand_ranges(nodelist, ranges))
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise _bad_nodelist(nodelist, f"unexpected {text[position]!r} at character {position + 1}")
            position += 1
            if position == len(text):
                raise _bad_nodelist(nodelist, "it ends with a comma")
    if not hosts or any(not host for host in hosts):
        raise _bad_nodelist(nodelist, "it names no host" if not hosts else "it has an empty host name")
    return hosts


def _expand_ranges(nodelist: str, ranges: str) -> list[str]:
    numbers: list[str] = []
    for part in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if match is None:
            raise _bad_nodelist(nodelist, f"{part!r} inside brackets is not a number or a range like 01-04")
        first, last = match.group(1), match.group(2) or match.group(1)
        if int(last) < int(first):
            raise _bad_nodelist(nodelist, f"range {part!r} goes backwards")
        width = len(first) if first.startswith("0") else 0
        numbers.extend(str(n).zfill(width) for n in range(int(first), int(last) + 1))
    return numbers


def _bad_nodelist(nodelist: str, why: str) -> LaunchError:
    return LaunchError(f"cannot read the Slurm node list {nodelist!r}: {why}",
                       hint="a node list looks like 'x[1000-1003,1007],y[01-02]'; check SLURM_JOB_NODELIST "
                       "or pass --hostfile with one host per line")


def detect_allocation(env: Mapping[str, str] | None = None) -> Allocation:
    """The hosts the scheduler gave this job; this machine alone when there is no scheduler."""
    env = os.environ if env is None else env
    scheduler = detect_scheduler(env)
    if scheduler == "pbs":
        nodefile = env.get("PBS_NODEFILE")
        if not nodefile:
            raise LaunchError("PBS_JOBID is set but PBS_NODEFILE is not, so the allocated hosts are unknown",
                              hint="run inside a PBS job (qsub/qsub -I), or pass --hostfile")
        hosts = read_hostfile(nodefile, "PBS_NODEFILE")
        return Allocation("pbs", hosts, f"PBS_NODEFILE={nodefile}", nodefile, *_pbs_layout(nodefile, hosts))
    if scheduler == "slurm":
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise LaunchError("SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not, so the allocated hosts are unknown",
                              hint="run inside a Slurm allocation (salloc/sbatch), or pass --hostfile")
        hosts = tuple(dict.fromkeys(expand_nodelist(nodelist)))
        return Allocation("slurm", hosts, f"SLURM_JOB_NODELIST={nodelist}", None, *_slurm_layout(env))
    return Allocation("none", (socket.gethostname(),), "this machine")


def _pbs_layout(nodefile: str, hosts: tuple[str, ...]) -> tuple[int | None, int | None]:
    """PBS writes each host once per MPI process (select=...:mpiprocs=K); a host written once
    says nothing about ranks, so the accelerator count decides then."""
    lines = [line.split("#", 1)[0].split() for line in
             Path(nodefile).read_text(encoding="utf-8", errors="replace").splitlines()]
    counts = [sum(1 for words in lines if words and words[0].split(":")[0] == host) for host in hosts]
    if max(counts) <= 1:
        return None, None
    return max(counts), sum(counts)


def _slurm_layout(env: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Ranks per host and in total from sbatch/salloc -n or --ntasks-per-node; none when the job
    gave neither (Slurm then reports one task per node, which is not a request for one rank)."""
    from auroragpt.runtime.env import expand_tasks_per_node

    asked = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or env.get("SLURM_NTASKS_PER_NODE")
    per_node = expand_tasks_per_node(env.get("SLURM_TASKS_PER_NODE", "")) if asked else None
    if not per_node or min(per_node) < 1:
        return None, None
    total = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or ""
    return max(per_node), int(total) if total.isdigit() and int(total) > 0 else sum(per_node)
