"""Record the collectives a piece of code issues: op, group, bytes, without changing what it does.

Every torch collective (c10d's ProcessGroup ops used by FSDP2, DDP's reducer and pipeline P2P, and
the functional ops of DTensor) goes through the dispatcher, so one dispatch mode sees them all on
any backend: gloo in a real step, torch's `fake` backend in a dry run. The dry run and the test
that checks it against a real step use this same recorder.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Dispatcher op name -> the name people know. Waits and the like are not collectives.
OP_NAMES: dict[str, str] = {
    "allreduce_": "all_reduce", "all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce",
    "allreduce_coalesced_": "all_reduce",
    "_allgather_base_": "all_gather", "allgather_": "all_gather", "all_gather_into_tensor": "all_gather",
    "allgather_into_tensor_coalesced_": "all_gather", "all_gather_into_tensor_coalesced": "all_gather",
    "_reduce_scatter_base_": "reduce_scatter", "reduce_scatter_": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter_tensor_coalesced_": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "broadcast_": "broadcast", "broadcast": "broadcast",
    "all_to_all_single": "all_to_all", "alltoall_base_": "all_to_all",
    "send": "send", "recv_": "recv", "recv_any_source_": "recv",
    "barrier": "barrier",
}


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective call: `nbytes` is the full buffer (gathered output, scattered input)."""

    op: str
    ranks: tuple[int, ...]  # global ranks of the group
    nbytes: int
    dtype: str

    @property
    def group_size(self) -> int:
        return len(self.ranks)


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _group_ranks(args: tuple, kwargs: dict) -> tuple[int, ...]:
    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _resolve_process_group

    for value in (*args, *kwargs.values()):
        if isinstance(value, dist.ProcessGroup) and not isinstance(value, torch.ScriptObject):
            return tuple(dist.get_process_group_ranks(value))
        if isinstance(value, torch.ScriptObject) and "ProcessGroup" in str(value._type()):
            return tuple(dist.get_process_group_ranks(dist.ProcessGroup.unbox(value)))
    # Functional ops name their group last: (input, [reduce op,] [group size,] group name).
    name = kwargs.get("group_name") or next((a for a in reversed(args) if isinstance(a, str)), None)
    if name is not None:
        return tuple(dist.get_process_group_ranks(_resolve_process_group(name)))
    return ()


class CollectiveRecorder(TorchDispatchMode):
    """`with CollectiveRecorder() as rec: ...` then `rec.calls` lists every collective in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Collective] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(issubclass(kind, DTensor) for kind in types):
            # Let DTensor turn the op into plain ops and collectives first; those come back here.
            return NotImplemented
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            return func(*args, **kwargs)
        namespace, _, name = func._schema.name.partition("::")
        if namespace in ("c10d", "_c10d_functional") and name in OP_NAMES:
            tensors = list(_tensors(args)) + list(_tensors(list(kwargs.values())))
            if tensors:
                ranks = _group_ranks(args, kwargs)
                dtype = str(tensors[0].dtype).replace("torch.", "")
                if OP_NAMES[name] == "all_reduce":  # a coalesced all-reduce counts as one per tensor
                    self.calls += [Collective("all_reduce", ranks, t.numel() * t.element_size(), dtype) for t in tensors]
                else:
                    biggest = max(t.numel() * t.element_size() for t in tensors)
                    self.calls.append(Collective(OP_NAMES[name], ranks, biggest, dtype))
        return func(*args, **kwargs)


SCALAR_BYTES = 1024


def summarize(calls: Iterable[Collective]) -> Counter:
    """Calls counted by (op, group size, bytes, dtype): what one step costs, order aside.

    All-reduces of a few scalars (the loss, the gradient norm's partial sums) are totalled per
    group: how many calls carry them depends on whether the norms were stacked first (foreach
    kernels on a real device) or not (the meta tensors of a dry run); the bytes do not.
    """
    counts: Counter = Counter()
    scalars: Counter = Counter()
    for c in calls:
        if c.op == "all_reduce" and c.nbytes <= SCALAR_BYTES:
            scalars[(c.group_size, c.dtype)] += c.nbytes
        else:
            counts[(c.op, c.group_size, c.nbytes, c.dtype)] += 1
    for (size, dtype), total in scalars.items():
        counts[("all_reduce (scalars, total)", size, total, dtype)] += 1
    return counts
