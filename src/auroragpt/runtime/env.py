"""Rank, local rank, world size and local world size from whatever launched this process.

`LAUNCHER_VARIABLES` is the one table of launcher variable names. Launchers are tried in order;
the first whose rank variable (and `present_if` variable) is set wins. When an MPI launcher is
evident but sets none of these names, mpi4py is asked (imported lazily, only then) before a plain
RANK/WORLD_SIZE is believed. No launcher at all means one process.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from auroragpt.errors import DistError


@dataclasses.dataclass(frozen=True)
class LauncherVariables:
    """Where one launcher puts the four numbers; a field may list alternatives, first set wins.

    `present_if`: the row counts only when one of these is set as well, so variables a shell or a
    batch script leaves behind are not mistaken for a launched job.
    """

    rank: tuple[str, ...]
    world_size: tuple[str, ...]
    local_rank: tuple[str, ...]
    local_world_size: tuple[str, ...]
    present_if: tuple[str, ...] = ()


# Tried in this order. torchrun comes first (inside an MPI or Slurm allocation it sets RANK for the
# process it started) but only with its run id: a RANK left in the shell must not turn each rank of
# an mpiexec job into a job of its own. Plain RANK/WORLD_SIZE (set by hand or by another launcher)
# come last, after asking MPI.
LAUNCHER_VARIABLES: dict[str, LauncherVariables] = {
    "torchrun": LauncherVariables(("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",), ("LOCAL_WORLD_SIZE",),
                                  present_if=("TORCHELASTIC_RUN_ID",)),
    # MPICH hydra sets PMI_* + MPI_LOCAL*; PALS (Aurora) sets PMI_* + PALS_LOCAL_*; PMIx sets PMIX_RANK.
    "mpich": LauncherVariables(
        ("PMI_RANK", "PMIX_RANK"),
        ("PMI_SIZE", "PMIX_SIZE"),
        ("PALS_LOCAL_RANKID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "PMIX_LOCAL_RANK"),
        ("PALS_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", "PMIX_LOCAL_SIZE"),
    ),
    "openmpi": LauncherVariables(
        ("OMPI_COMM_WORLD_RANK",), ("OMPI_COMM_WORLD_SIZE",),
        ("OMPI_COMM_WORLD_LOCAL_RANK",), ("OMPI_COMM_WORLD_LOCAL_SIZE",),
    ),
    # Only srun sets SLURM_STEP_NUM_TASKS. A batch script also has SLURM_PROCID=0 and SLURM_NTASKS=N,
    # but it is one process: reading it as rank 0 of N would wait for ranks that never come.
    "slurm": LauncherVariables(
        ("SLURM_PROCID",), ("SLURM_STEP_NUM_TASKS",), ("SLURM_LOCALID",), ("SLURM_NTASKS_PER_NODE",),
        present_if=("SLURM_STEP_NUM_TASKS",),
    ),
    "env": LauncherVariables(("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",), ("LOCAL_WORLD_SIZE",)),
}
# Slurm's other variables: tasks per node ("4(x2),3") and node index, for the local world size, and
# the hosts and id of the step, for the rendezvous address.
SLURM_TASKS_PER_NODE = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
SLURM_NODE_ID = "SLURM_NODEID"
SLURM_NODELISTS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
SLURM_STEP_ID = "SLURM_STEP_ID"
# Asked after these rows and before the plain "env" row, when an MPI launcher is evident.
# Open MPI before the PMI row: Open MPI 5 also exports PMIX_RANK, but no PMIX_SIZE.
ROWS_BEFORE_MPI4PY = ("torchrun", "openmpi", "mpich", "slurm")

# Variables whose presence says "an MPI launcher started me" even when no rank variable is set.
MPI_EVIDENCE = ("PMI_FD", "PMI_PORT", "PMI_HOSTNAME", "PMIX_NAMESPACE", "HYDI_CONTROL_FD", "PALS_APID",
                "OMPI_COMM_WORLD_NODE_RANK")


@dataclasses.dataclass(frozen=True)
class RankInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    launcher: str  # a key of LAUNCHER_VARIABLES, "mpi4py" or "none"


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            return name, value
    return None


def _as_int(name: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise DistError(f"launcher variable {name}={value!r} is not an integer",
                        hint=f"unset {name} or start the job through `auroragpt launch`") from None
    if number < 0:
        raise DistError(f"launcher variable {name}={value!r} is negative", hint=f"unset {name}")
    return number


def expand_tasks_per_node(tasks_per_node: str) -> list[int] | None:
    """Slurm's compressed per-node task counts, e.g. "4(x2),3" means [4, 4, 3]; None if unreadable."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int | None:
    """Tasks on node `node_id` from SLURM_TASKS_PER_NODE, e.g. "4(x2),3" means 4, 4, 3."""
    counts = expand_tasks_per_node(tasks_per_node) or []
    return counts[node_id] if 0 <= node_id < len(counts) else None


def read_rank_info(env: Mapping[str, str] | None = None, use_mpi4py: bool = True) -> RankInfo:
    """The four numbers for this process; validated so that 0 <= rank < world_size."""
    env = os.environ if env is None else env
    for launcher in ROWS_BEFORE_MPI4PY:
        info = _from_row(launcher, env)
        if info is not None:
            return info
    if use_mpi4py and any(env.get(name) for name in MPI_EVIDENCE):
        return _from_mpi4py()
    return _from_row("env", env) or RankInfo(0, 0, 1, 1, "none")


def _from_row(launcher: str, env: Mapping[str, str]) -> RankInfo | None:
    names = LAUNCHER_VARIABLES[launcher]
    found = _first(env, names.rank)
    if found is None or (names.present_if and _first(env, names.present_if) is None):
        return None
    rank = _as_int(*found)
    world = _first(env, names.world_size)
    world_size = _as_int(*world) if world else rank + 1
    local = _first(env, names.local_rank)
    local_rank = _as_int(*local) if local else rank
    local_world = _first(env, names.local_world_size)
    per_node = _first(env, SLURM_TASKS_PER_NODE)
    if local_world:
        local_world_size = _as_int(*local_world)
    elif launcher == "slurm" and per_node and env.get(SLURM_NODE_ID):
        local_world_size = slurm_tasks_on_node(per_node[1], _as_int(SLURM_NODE_ID, env[SLURM_NODE_ID])) or world_size
    else:
        local_world_size = world_size
    return _validated(RankInfo(rank, local_rank, world_size, local_world_size, launcher), found[0])


def _validated(info: RankInfo, rank_variable: str) -> RankInfo:
    if info.world_size < 1 or info.rank >= info.world_size:
        raise DistError(
            f"the {info.launcher} launcher variables disagree: {rank_variable} says rank {info.rank} "
            f"but the world size is {info.world_size}",
            hint="unset stale launcher variables (RANK, WORLD_SIZE, PMI_*, SLURM_*) left in your shell",
        )
    if info.local_world_size < 1 or info.local_rank >= info.local_world_size:
        # A stale local size is harmless for correctness; trust the local rank.
        info = dataclasses.replace(info, local_world_size=info.local_rank + 1)
    return info


def _from_mpi4py() -> RankInfo:
    """Ask MPI directly: a launcher we do not know started us (its PMI variables are set)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistError(
            "this process was started by an MPI launcher that sets none of the rank variables we know",
            hint="install mpi4py (`pip install mpi4py`) so the rank can be asked from MPI, or launch "
            "with `auroragpt launch`",
        ) from None
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    info = RankInfo(comm.Get_rank(), local.Get_rank(), comm.Get_size(), local.Get_size(), "mpi4py")
    local.Free()
    return info


def launched_by_mpi(env: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher (hydra, PALS, OpenMPI) started this process."""
    env = os.environ if env is None else env
    torchrun = LAUNCHER_VARIABLES["torchrun"]
    if _first(env, torchrun.rank) and _first(env, torchrun.present_if):
        return False
    return any(env.get(n) for n in LAUNCHER_VARIABLES["mpich"].rank + LAUNCHER_VARIABLES["openmpi"].rank
               + MPI_EVIDENCE)
