"""Pipeline parallelism: cut a GPT into stages and run them with torch.distributed.pipelining.

A stage is a copy of the whole model with the layers it does not own deleted and, where it is not
first or last, tok_embeddings / norm / output set to None. Surviving layers keep their names
("layers.7" stays "layers.7"), so checkpoints taken with any pipeline size line up.
With v virtual stages per rank, rank r owns stages r, r + pp, r + 2 pp, ... (the interleaved order).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from auroragpt.parallel.layout import ParallelLayout


def stage_ids(pp_rank: int, pp: int, virtual_stages: int) -> list[int]:
    """The global stage indices owned by one pipeline rank, in execution order."""
    return [pp_rank + k * pp for k in range(virtual_stages)]


def stage_layers(stage: int, num_stages: int, n_layers: int) -> range:
    """Layer ids of one stage: an even split (validate() checked the divisibility)."""
    per_stage = n_layers // num_stages
    return range(stage * per_stage, (stage + 1) * per_stage)


def split_into_stages(model: nn.Module, pp_rank: int, layout: ParallelLayout) -> list[tuple[int, nn.Module]]:
    """(stage index, stage module) for each stage this rank owns.

    The model is deep-copied per stage (cheap on the meta device; on a real device the caller
    pays one model's memory per rank until the copies are made). With one stage per rank the
    model itself is cut in place.
    """
    num_stages = layout.pp * layout.pp_virtual_stages
    n_layers = len(model.layers)
    owned = stage_ids(pp_rank, layout.pp, layout.pp_virtual_stages)
    stages = []
    for stage in owned:
        part = model if (len(owned) == 1) else copy.deepcopy(model)
        keep = {str(i) for i in stage_layers(stage, num_stages, n_layers)}
        for name in list(part.layers.keys()):
            if name not in keep:
                del part.layers[name]
        if stage != 0:
            part.tok_embeddings = None
        if stage != num_stages - 1:
            part.norm = None
            part.output = None
        stages.append((stage, part))
    return stages


def build_pipeline_stages(
    parts: list[tuple[int, nn.Module]], layout: ParallelLayout, pp_mesh: DeviceMesh, device: torch.device
) -> list:
    """Wrap each (stage index, module) in a PipelineStage talking over the pp group."""
    from torch.distributed.pipelining import PipelineStage

    num_stages = layout.pp * layout.pp_virtual_stages
    group = pp_mesh.get_group()
    return [PipelineStage(module, index, num_stages, device, group=group) for index, module in parts]


def build_schedule(stages: list, layout: ParallelLayout, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """The schedule named by layout.pp_schedule over this rank's stages.

    Gradients are summed, not averaged, over microbatches (scale_grads=False: torch's scaling
    would also divide gradients accumulated by earlier steps); `loss_fn` must carry the 1/n.
    """
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

    n = layout.num_microbatches
    if layout.pp_schedule == "Interleaved1F1B":
        return ScheduleInterleaved1F1B(stages, n_microbatches=n, loss_fn=loss_fn, scale_grads=False)
    single = {"1F1B": Schedule1F1B, "GPipe": ScheduleGPipe}[layout.pp_schedule]
    return single(stages[0], n_microbatches=n, loss_fn=loss_fn, scale_grads=False)
