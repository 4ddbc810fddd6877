"""Data parallelism: DDP for plain replicas, FSDP2 (`fully_shard`) for sharded and hybrid runs."""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from auroragpt.parallel.blocks import BlockSpec, find_blocks


def mixed_precision_policy(enabled: bool):
    """bf16 compute with fp32 gradient reduction (FSDP2), or full fp32 when disabled."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not enabled:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def apply_fsdp(
    model: nn.Module,
    dp_mesh: DeviceMesh,
    *,
    mixed_precision: bool,
    reshard_after_forward: bool = True,
    blocks: BlockSpec = None,
) -> nn.Module:
    """Shard every block (`find_blocks`: the GPT's transformer blocks), then the rest, over `dp_mesh`
    (1-D: FSDP, 2-D: HSDP).

    With a 2-D mesh ("dp_replicate", "dp_shard") parameters are sharded inside a replica group
    and replicated across groups, which keeps the all-gathers inside a node.
    Blocks are sharded one by one so that only one block's full weights live at a time.
    """
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision_policy(mixed_precision)
    found = find_blocks(model, blocks)
    for i, block in enumerate(found):
        # The last block is gathered again right away for backward; keep it unsharded.
        keep = reshard_after_forward and i < len(found) - 1
        fully_shard(block, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=keep)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def apply_ddp(model: nn.Module, dp_mesh: DeviceMesh) -> nn.Module:
    """Wrap in DistributedDataParallel over the 1-D replica mesh.

    The wrapper adds a "module." prefix to parameter names; torch.distributed.checkpoint's
    get_model_state_dict removes it, so checkpoints keep the single-device names.
    """
    from torch.nn.parallel import DistributedDataParallel

    device_ids = None
    param = next(model.parameters(), None)
    if param is not None and param.device.type not in ("cpu", "meta"):
        device_ids = [param.device]
    # Buffers (the rotary tables) are equal on every rank: no need to re-send them every forward.
    # Newer torch names this forward_sync_buffers and deprecates broadcast_buffers.
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(model, process_group=dp_mesh.get_group(), device_ids=device_ids, **no_buffer_sync)


def set_gradient_sync(module: nn.Module, enabled: bool) -> None:
    """Turn the gradient reduction of FSDP2 on or off (off for all but the last accumulation step)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(enabled)


def autocast_forward(module: nn.Module, device_type: str) -> None:
    """Run `module`'s forward under bf16 autocast (mixed precision where FSDP's policy is absent).

    The forward is replaced on the instance, so parameter names stay those of the plain module.
    """
    plain = module.forward

    def forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return plain(*args, **kwargs)

    module.forward = forward


@torch.no_grad()
def broadcast_from_rank0(module: nn.Module, group=None) -> None:
    """Make every rank hold rank 0's parameters and buffers (before sharding: FSDP2, unlike DDP,
    does not sync them, and replicas that start apart never meet again)."""
    import torch.distributed as dist

    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0, group=group)
