"""One call to get a working process group on any machine, and seeds that never collide.

`setup()` reads the launcher's variables (runtime/env.py), picks the device and backend
(runtime/device.py), sets this rank's device BEFORE the process group forms, agrees on
MASTER_ADDR/MASTER_PORT, initialises torch.distributed and returns an immutable `DistInfo`.
A world of one rank gets a group too (over a private in-memory store, so no port is taken): a
script that calls torch.distributed.get_rank() or all_reduce runs unchanged on a laptop.
Calling it again returns the same object; `teardown()` undoes it.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
import socket
from typing import Any

from auroragpt import envvars
from auroragpt.runtime import device as device_mod
from auroragpt.runtime.env import SLURM_NODELISTS, SLURM_STEP_ID, RankInfo, launched_by_mpi, read_rank_info
from auroragpt.errors import DistError

DEFAULT_TIMEOUT_S = 600.0
_MASK64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Everything a rank needs to know about the run it is part of."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    num_nodes: int
    node_rank: int
    device: Any  # torch.device
    backend: str
    hostname: str
    launcher: str
    hostnames: tuple[str, ...] = ()  # distinct hosts of the job, in node_rank order

    def topology(self) -> str:
        """One line a user can check against the allocation they asked for."""
        return (f"topology: {self.world_size} rank(s) on {self.num_nodes} host(s) ({', '.join(self.hostnames)}), "
                f"{self.local_world_size} per host, device {self.device.type}, backend {self.backend}, "
                f"launcher {self.launcher}")


_INFO: DistInfo | None = None


def setup(timeout_s: float | None = None, seed: int | None = None) -> DistInfo:
    """Initialise this rank (idempotent). With `seed`, also seeds random/numpy/torch per rank."""
    global _INFO
    import torch.distributed as dist

    if _INFO is not None and dist.is_initialized():
        if seed is not None:
            seed_everything(seed, _INFO.rank)
        return _INFO
    ranks = read_rank_info()
    device_type = device_mod.detect_device()
    backend = device_mod.detect_backend(device_type)
    device = device_mod.local_device(device_type, ranks.local_rank)
    device_mod.set_current_device(device)
    hostname = socket.gethostname()
    if not dist.is_initialized():
        _init_process_group(ranks, backend, timeout_s)
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, hostname)
    hosts = tuple(dict.fromkeys(gathered))
    _INFO = DistInfo(
        rank=ranks.rank, local_rank=ranks.local_rank, world_size=ranks.world_size,
        local_world_size=ranks.local_world_size, num_nodes=len(hosts), node_rank=hosts.index(hostname),
        device=device, backend=backend, hostname=hostname, launcher=ranks.launcher, hostnames=hosts,
    )
    if seed is not None:
        seed_everything(seed, _INFO.rank)
    return _INFO


def _init_process_group(ranks: RankInfo, backend: str, timeout_s: float | None) -> None:
    """Join (or, alone, form) the default process group; any failure becomes one DistError."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_seconds(timeout_s))
    store = None
    if ranks.world_size == 1:
        store = dist.HashStore()  # nothing to rendezvous with: no MASTER_ADDR, no port
    else:
        _agree_on_master(ranks)
    device_mod.register_backend(backend)
    try:
        atexit.unregister(teardown)
        atexit.register(teardown)  # a script that never calls teardown() still exits cleanly
        dist.init_process_group(backend=backend, rank=ranks.rank, world_size=ranks.world_size,
                                timeout=timeout, store=store)
    except Exception as err:  # noqa: BLE001 - any rendezvous failure becomes one clear message
        where = "a private store" if store is not None else (
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}")
        raise DistError(
            f"rank {ranks.rank} of {ranks.world_size} could not join the process group at {where} "
            f"with {backend}: {err}",
            hint="check that every rank was started by the same launcher and can reach MASTER_ADDR; "
            "raise AURORAGPT_DIST_TIMEOUT if ranks start slowly",
        ) from None


def current() -> DistInfo | None:
    """The DistInfo of the last setup() whose group still exists, else None (never sets anything up)."""
    import torch.distributed as dist

    return _INFO if _INFO is not None and dist.is_initialized() else None


def teardown() -> None:
    """Destroy the process group (if any) so a later setup() starts afresh.

    Objects that hold the group in reference cycles (DDP's reducer, FSDP state) are collected
    first, while the interpreter is fully alive: left to the collector at interpreter exit, the
    group's destructor can meet a gloo worker thread that wants the GIL, and the process then
    aborts with "terminate called without an active exception" after a successful run.
    """
    global _INFO
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
    _INFO = None


def timeout_seconds(timeout_s: float | None = None) -> float:
    """The process-group timeout: `timeout_s`, else AURORAGPT_DIST_TIMEOUT, else 600 s (validated)."""
    if timeout_s is not None:
        value: float | str = timeout_s
    else:
        value = envvars.read("AURORAGPT_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S)) or DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistError(f"distributed timeout {value!r} is not a positive number of seconds",
                        hint="set AURORAGPT_DIST_TIMEOUT to e.g. 600, or unset it")
    return seconds


def free_port() -> int:
    """A TCP port that was free a moment ago on this host (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _agree_on_master(ranks: RankInfo) -> None:
    """Make MASTER_ADDR/MASTER_PORT identical on every rank before the rendezvous."""
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            raise DistError(
                "launched by mpiexec without MASTER_ADDR/MASTER_PORT, and mpi4py is not installed to agree on them",
                hint="`pip install mpi4py`, or export MASTER_ADDR and MASTER_PORT before mpiexec",
            ) from None
        comm = MPI.COMM_WORLD
        proposal = None
        if comm.Get_rank() == 0:
            single_node = ranks.local_world_size == ranks.world_size
            proposal = ("127.0.0.1" if single_node else socket.gethostname(), free_port())
        addr, port = comm.bcast(proposal, root=0)
    elif ranks.launcher == "slurm" and any(os.environ.get(name) for name in SLURM_NODELISTS):
        from auroragpt.runtime.scheduler import expand_nodelist

        nodelist = next(os.environ[name] for name in SLURM_NODELISTS if os.environ.get(name))
        addr = expand_nodelist(nodelist)[0]  # the step's first host runs rank 0
        job_id = int("".join(ch for ch in os.environ.get("SLURM_JOB_ID", "0") if ch.isdigit()) or "0")
        step_id = int("".join(ch for ch in os.environ.get(SLURM_STEP_ID, "0") if ch.isdigit()) or "0")
        port = 20000 + (job_id + 7919 * step_id) % 20000  # same on every rank; differs between jobs and steps
    else:
        raise DistError(
            f"world size is {ranks.world_size} (from {ranks.launcher}) but MASTER_ADDR/MASTER_PORT are not set",
            hint="start the job through `auroragpt launch`, or export MASTER_ADDR and MASTER_PORT on every rank",
        )
    os.environ.setdefault("MASTER_ADDR", str(addr))
    os.environ["MASTER_PORT"] = os.environ.get("MASTER_PORT") or str(port)


def seed_for_rank(seed: int, rank: int) -> int:
    """A reproducible 64-bit seed for `rank`. For a fixed seed it is injective in rank (< 2**64),
    so no two ranks ever share a stream (unlike seed*(rank+1)*(local_rank+1))."""
    from auroragpt.hashing import mix64

    return int(mix64((int(mix64(seed & _MASK64)) + rank) & _MASK64))


def seed_everything(seed: int, rank: int) -> int:
    """Seed python, numpy and torch (all devices) for this rank; returns the seed used."""
    import random

    import numpy as np
    import torch

    rank_seed = seed_for_rank(seed, rank)
    random.seed(rank_seed)
    np.random.seed([rank_seed & 0xFFFFFFFF, rank_seed >> 32])
    torch.manual_seed(rank_seed)
    return rank_seed
