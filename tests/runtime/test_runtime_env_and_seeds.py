"""Rank discovery from every launcher in the table, device/backend overrides, setup at world
size 1, and per-rank seeds."""

from __future__ import annotations

import pytest

from auroragpt.runtime.device import detect_backend, detect_device, device_name
from auroragpt.runtime.env import read_rank_info, slurm_tasks_on_node
from auroragpt.runtime.setup import seed_everything, seed_for_rank, setup, teardown
from auroragpt.errors import DistError


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "x"},
         (5, 1, 8, 4, "torchrun")),
        # RANK/WORLD_SIZE set by hand or by another launcher
        ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}, (5, 1, 8, 4, "env")),
        # a RANK left in the shell does not hide the mpiexec job this process belongs to
        ({"RANK": "0", "WORLD_SIZE": "1", "PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1",
          "MPI_LOCALNRANKS": "2", "PMI_FD": "9"}, (1, 1, 2, 2, "mpich")),
        # a plain process inside a Slurm batch script (no srun): one process, not rank 0 of 8
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0",
          "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "4(x2)"}, (0, 0, 1, 1, "none")),
        # Aurora PALS mpiexec
        ({"PMI_RANK": "13", "PMI_SIZE": "24", "PALS_LOCAL_RANKID": "1", "PALS_LOCAL_SIZE": "12",
          "PALS_APID": "x"}, (13, 1, 24, 12, "mpich")),
        # MPICH hydra (the mpich wheel)
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "PMI_FD": "9"},
         (1, 1, 2, 2, "mpich")),
        ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
          "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (3, 1, 4, 2, "openmpi")),
        ({"SLURM_PROCID": "9", "SLURM_STEP_NUM_TASKS": "12", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
          "SLURM_TASKS_PER_NODE": "4(x2),3,1", "SLURM_NODEID": "2"}, (9, 1, 12, 3, "slurm")),
        # torchrun inside a Slurm allocation: torchrun's variables describe the process
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x",
          "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, (0, 0, 2, 2, "torchrun")),
        ({}, (0, 0, 1, 1, "none")),
    ],
)
def test_rank_info_from_each_launcher(env: dict, expected: tuple) -> None:
    info = read_rank_info(env, use_mpi4py=False)
    assert (info.rank, info.local_rank, info.world_size, info.local_world_size, info.launcher) == expected


def test_slurm_rendezvous_uses_the_step_hosts_and_step_id(clean_env: pytest.MonkeyPatch) -> None:
    """`srun --nodelist` may run a step on hosts other than the allocation's first: rank 0's host is
    the step's first, and two steps of one job do not pick the same port."""
    from auroragpt.runtime.env import RankInfo
    from auroragpt.runtime.setup import _agree_on_master

    ranks = RankInfo(0, 0, 4, 2, "slurm")
    ports = set()
    for step in ("0", "1"):
        for name, value in {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "nid[001000-001127]",
                            "SLURM_STEP_NODELIST": "nid[001003-001004]", "SLURM_STEP_ID": step}.items():
            clean_env.setenv(name, value)
        _agree_on_master(ranks)
        import os

        assert os.environ["MASTER_ADDR"] == "nid001003"
        ports.add(os.environ["MASTER_PORT"])
        # popped, not monkeypatch.delenv: that would record the values _agree_on_master set and
        # restore them after the test, leaking a rendezvous host into every later test
        os.environ.pop("MASTER_ADDR")
        os.environ.pop("MASTER_PORT")
    assert len(ports) == 2


def test_slurm_tasks_per_node_format() -> None:
    assert [slurm_tasks_on_node("4(x2),3", i) for i in range(3)] == [4, 4, 3]
    assert slurm_tasks_on_node("12(x128)", 127) == 12
    assert slurm_tasks_on_node("garbage", 0) is None


@pytest.mark.parametrize("env", [{"RANK": "4", "WORLD_SIZE": "4"}, {"PMI_RANK": "x", "PMI_SIZE": "2"}])
def test_inconsistent_launcher_variables_are_explained(env: dict) -> None:
    with pytest.raises(DistError) as err:
        read_rank_info(env, use_mpi4py=False)
    assert "RANK" in str(err.value) and err.value.hint


def test_device_and_backend_overrides(clean_env: pytest.MonkeyPatch) -> None:
    assert detect_device() in ("cpu", "cuda", "xpu", "mps")
    clean_env.setenv("AURORAGPT_DEVICE", "cpu")
    assert detect_device() == "cpu" and detect_backend("cpu") == "gloo"
    assert device_name("cpu")
    clean_env.setenv("AURORAGPT_DEVICE", "tpu")
    with pytest.raises(DistError, match="AURORAGPT_DEVICE='tpu' is not a device"):
        detect_device()
    clean_env.delenv("AURORAGPT_DEVICE")
    clean_env.setenv("AURORAGPT_BACKEND", "mpi-fast")
    with pytest.raises(DistError, match="'mpi-fast' is not a collective backend"):
        detect_backend("cpu")
    clean_env.setenv("AURORAGPT_BACKEND", "nccl")
    with pytest.raises(DistError, match="nccl cannot drive a cpu device") as err:
        detect_backend("cpu")
    assert "nccl needs CUDA" in err.value.hint


def test_setup_without_launcher_is_world_one_and_idempotent(clean_env: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    try:
        first = setup(seed=7)
        again = setup()
        assert first is again
        assert (first.rank, first.world_size, first.num_nodes, first.node_rank, first.launcher) == (0, 1, 1, 0, "none")
        assert first.hostnames == (first.hostname,)
        assert dist.is_initialized() and dist.get_world_size() == 1  # a 1-rank group: plain dist calls work
        with pytest.raises(dataclasses_frozen_error()):
            first.rank = 3  # type: ignore[misc]
    finally:
        teardown()


def dataclasses_frozen_error() -> type:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_seeds_distinct_for_ten_thousand_ranks_and_reproducible() -> None:
    for seed in (0, 1, 42, 2**31 - 1, 2**64 + 5):
        seeds = [seed_for_rank(seed, rank) for rank in range(10_000)]
        assert len(set(seeds)) == len(seeds)
        assert all(0 <= s < 2**64 for s in seeds)
    assert seed_for_rank(42, 7) == seed_for_rank(42, 7)
    assert seed_for_rank(42, 7) != seed_for_rank(43, 7)
    # The ezpz pattern seed*(rank+1)*(local_rank+1) collides; ours does not, e.g. rank 1/local 0 vs rank 0/local 1.
    assert seed_for_rank(42, 1) != seed_for_rank(42, 0)


def test_seed_everything_gives_reproducible_per_rank_streams() -> None:
    import torch

    seed_everything(3, 0)
    a = torch.rand(4)
    seed_everything(3, 1)
    b = torch.rand(4)
    seed_everything(3, 0)
    assert torch.equal(a, torch.rand(4)) and not torch.equal(a, b)


def test_ccl_backend_plugin_is_imported_before_use(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.distributed knows "ccl" only after oneccl_bindings_for_pytorch is imported."""
    import sys

    from auroragpt.runtime.device import register_backend

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "oneccl_bindings_for_pytorch", raising=False)
    with pytest.raises(DistError, match="the ccl backend needs oneccl_bindings_for_pytorch"):
        register_backend("ccl")
    (tmp_path / "oneccl_bindings_for_pytorch.py").write_text("import builtins\nbuiltins._ccl_registered = True\n")
    register_backend("ccl")
    register_backend("gloo")  # built in: nothing to import
    import builtins

    assert getattr(builtins, "_ccl_registered", False)
    del builtins._ccl_registered
    sys.modules.pop("oneccl_bindings_for_pytorch", None)
