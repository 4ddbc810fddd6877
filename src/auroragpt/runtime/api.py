"""The public runtime API for a user's own script: `import auroragpt as ag; ag.setup(); ag.wrap(...)`.

Everything here is a thin front over the machinery the trainer uses (runtime/setup.py for the
process group, parallel/ for DDP/FSDP2/HSDP and activation checkpointing), so a script and
`auroragpt train` behave alike on a laptop, Polaris or Aurora. Nothing happens at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auroragpt.errors import DistError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from auroragpt.parallel.blocks import BlockSpec
    from auroragpt.runtime.setup import DistInfo


def setup(seed: int | None = None, timeout_s: float | None = None) -> "DistInfo":
    """Join the job that launched this script (or form a 1-rank one) and return who we are.

    Idempotent. The default process group always exists afterwards, also on one rank, so plain
    torch.distributed calls work everywhere. With `seed`, python/numpy/torch get a per-rank seed.
    """
    from auroragpt.runtime.setup import setup as _setup

    return _setup(timeout_s=timeout_s, seed=seed)


def teardown() -> None:
    """Destroy the process group; a later setup() starts afresh (also runs at exit)."""
    from auroragpt.runtime.setup import teardown as _teardown

    _teardown()


def info(caller: str = "auroragpt") -> "DistInfo":
    """The DistInfo of the current setup(); a clear error if there is none."""
    from auroragpt.runtime.setup import current

    found = current()
    if found is None:
        raise DistError(f"{caller}() needs a process group, and none is set up",
                        hint="call auroragpt.setup() once at the start of the script")
    return found


def device() -> "torch.device":
    """This rank's device (cuda:LOCAL_RANK, xpu:..., mps or cpu); works before setup() too."""
    from auroragpt.runtime.setup import current

    found = current()
    if found is not None:
        return found.device
    from auroragpt.runtime import device as device_mod
    from auroragpt.runtime.env import read_rank_info

    return device_mod.local_device(device_mod.detect_device(), read_rank_info().local_rank)


def rank() -> int:
    """This process's global rank: from the group when set up, else from the launcher's variables."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    from auroragpt.runtime.env import read_rank_info

    return read_rank_info().rank


def barrier() -> None:
    """Wait until every rank gets here."""
    import torch.distributed as dist

    info("barrier")
    dist.barrier()


def print0(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only (flushed, so output is not lost when another rank fails)."""
    if rank() == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def collective_device() -> "torch.device":
    """Where tensors must live for this backend's collectives: the CPU for gloo, else the rank's device."""
    import torch

    found = info("collective_device")
    return torch.device("cpu") if found.backend == "gloo" else found.device


def all_reduce_mean(value: "torch.Tensor | float") -> "torch.Tensor | float":
    """The mean of `value` over all ranks, the same on every rank: a float for a number, else a new
    floating tensor on the input's device (the input is left as it was)."""
    import torch
    import torch.distributed as dist

    where = collective_device()
    if isinstance(value, torch.Tensor):
        dtype = value.dtype if value.is_floating_point() else torch.float64
        out = value.detach().to(device=where, dtype=dtype, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return (out / dist.get_world_size()).to(value.device)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"all_reduce_mean() takes a tensor or a number, not {type(value).__name__}") from None
    out = torch.tensor([number], dtype=torch.float64, device=where)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.item() / dist.get_world_size()


def wrap(
    model: "nn.Module",
    mode: str = "ddp",
    *,
    mixed_precision: bool = False,
    activation_checkpointing: bool | str | int | None = "none",
    blocks: "BlockSpec" = None,
    replicate: int | None = None,
) -> "nn.Module":
    """Spread a user's own nn.Module over the job, with the trainer's own code.

    mode "ddp": replicas (DistributedDataParallel); "fsdp": parameters sharded over every rank
    (FSDP2); "hsdp": sharded inside `replicate` groups (default: one per node), replicated across.
    `blocks` names the repeated submodules (a class, dotted names, or modules; default
    `model.layers` if present): each is sharded on its own and is the unit of activation
    checkpointing ("full", "every:N", "selective"). mixed_precision: bf16 compute, fp32 gradient
    reduction (FSDP's policy; bf16 autocast of the forward under DDP). The model moves to device()
    and starts from rank 0's weights on every rank (so a per-rank seed cannot split replicas).
    Returns the module to call (DDP returns a wrapper; FSDP modifies the module in place).
    """
    from auroragpt.parallel.activation_checkpoint import apply_activation_checkpoint
    from auroragpt.parallel.data_parallel import apply_ddp, apply_fsdp, autocast_forward, broadcast_from_rank0
    from auroragpt.parallel.layout import build_mesh, data_parallel_layout

    found = info("wrap")
    layout = data_parallel_layout(mode, found.world_size, found.num_nodes, replicate)
    mesh = build_mesh(layout, found.device.type)
    model = model.to(found.device)
    apply_activation_checkpoint(model, activation_checkpointing, blocks)
    if mode == "ddp":
        if mixed_precision:
            autocast_forward(model, found.device.type)
        return apply_ddp(model, mesh["dp_replicate"])  # DDP broadcasts rank 0's state itself
    if found.world_size > 1:
        broadcast_from_rank0(model)
    dp_mesh = mesh["dp_shard"] if mode == "fsdp" else mesh["dp_replicate", "dp_shard"]
    return apply_fsdp(model, dp_mesh, mixed_precision=mixed_precision, blocks=blocks)
