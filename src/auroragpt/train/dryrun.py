"""`auroragpt train --dry-run --world-size N`: build one rank of an N-rank job on a laptop.

Each simulated rank joins torch's `fake` process group (collectives return at once, no data
moves), builds the real device mesh, builds the model on the meta device (shapes only, no weights),
applies the real `parallelize` and optimizer (without activation checkpointing and compile, which
change neither what a rank holds nor what it sends), and runs one real training step on meta tensors
while `CollectiveRecorder` notes every collective. Its parameter, gradient and optimizer-state
bytes are therefore those of the real job's rank, not a formula; activation memory, step time and
the memory verdict come from `dryrun_estimate` and the one device table.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from auroragpt.config import Config
from auroragpt.runtime.collectives import Collective, CollectiveRecorder


@dataclasses.dataclass
class RankState:
    """What one rank holds and does in one step (bytes are per rank)."""

    rank: int
    coords: dict[str, int]  # position on each mesh dimension
    stages: list[int]  # pipeline stages this rank runs
    param_bytes: int
    param_count: int
    grad_bytes: int
    optimizer_bytes: int
    collectives: list[Collective]


def tensor_bytes(tensors) -> tuple[int, int]:
    """(elements, bytes) of this rank's part of each tensor (the local shard of a DTensor)."""
    from torch.distributed.tensor import DTensor

    count = size = 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        count += local.numel()
        size += local.numel() * local.element_size()
    return count, size


def optimizer_state_tensors(optimizers) -> list[torch.Tensor]:
    """Every tensor of every optimizer's state (moments and step counters)."""
    return [value for opt in optimizers for state in opt.state.values() for value in state.values()
            if isinstance(value, torch.Tensor)]


def measure_rank(runner, optimizers) -> dict[str, int]:
    """Parameter, gradient and optimizer bytes of this rank, as a dry run and a real run count them."""
    count, params = tensor_bytes(runner.parameters())
    _, grads = tensor_bytes(p.grad for p in runner.parameters() if p.grad is not None)
    _, optim = tensor_bytes(optimizer_state_tensors(optimizers))
    return {"param_count": count, "param_bytes": params, "grad_bytes": grads, "optimizer_bytes": optim}


def one_step(cfg: Config, runner, optimizers, accum: int, device: torch.device | str) -> list[Collective]:
    """One training step as the trainer runs it (step, clip, optimizer), its collectives recorded."""
    from auroragpt.train.trainer import cross_entropy

    rows = accum * cfg.data.micro_batch
    tokens = torch.zeros(rows, cfg.data.seq_len, dtype=torch.long, device=device)
    with CollectiveRecorder() as recorder:
        runner.train_step(tokens, tokens, cross_entropy, grad_accum=accum)
        runner.clip_grad_norm_(cfg.train.grad_clip)
        for optimizer in optimizers:
            optimizer.step()
    return recorder.calls


def simulate_rank(cfg: Config, model_cfg, layout, rank: int) -> RankState:
    """Build rank `rank` of the job on the fake backend and the meta device, and run one step."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=layout.world_size)
    try:
        with _mesh_lookups_cached():
            return _build_and_step(cfg, model_cfg, layout, rank)
    finally:
        dist.destroy_process_group()


def _build_and_step(cfg: Config, model_cfg, layout, rank: int) -> RankState:
    from auroragpt.model.gpt import GPT
    from auroragpt.parallel.layout import MESH_DIMS, build_mesh, grad_accum_steps
    from auroragpt.parallel.parallelize import parallelize
    from auroragpt.train.optim import build_optimizer

    mesh = build_mesh(layout, "cpu")
    with torch.device("meta"):
        model = GPT(model_cfg)
    runner = parallelize(model, layout, mesh, mixed_precision=cfg.parallel.mixed_precision == "bf16",
                         activation_checkpoint="none", compile=False, device="meta")
    optimizers = [build_optimizer(part, cfg.optim) for part in runner.model_parts]
    accum = grad_accum_steps(layout, cfg.data.global_batch, cfg.data.micro_batch)
    if layout.pp == 1:
        with _fsdp_accepts_meta(runner):
            calls = one_step(cfg, runner, optimizers, accum, "meta")
        measured = measure_rank(runner, optimizers)
    else:  # torch's pipeline schedules need real values (they call .item())
        calls = pipeline_collectives(cfg, model_cfg, layout, mesh, runner, accum)
        measured = pipeline_memory(runner)
    coords = {name: mesh.get_local_rank(name) for name in MESH_DIMS} if mesh is not None else {}
    return RankState(rank, coords, list(runner.stage_indices), collectives=calls, **measured)


@contextlib.contextmanager
def _mesh_lookups_cached():
    """DeviceMesh finds this rank's row by scanning the whole world's rank tensor on every access
    (0.1 s at 120,960 ranks, hundreds of times while FSDP and TP shard each parameter); the
    answer depends only on the layout and the rank, so it is remembered for the dry run."""
    from torch.distributed.device_mesh import DeviceMesh

    original_mesh, original_coords = DeviceMesh.mesh, DeviceMesh._compute_coordinates_from_mesh
    meshes: dict = {}
    coords: dict = {}

    def mesh(self) -> torch.Tensor:
        key = (self._layout, id(self._rank_map), self._rank_map.numel())
        if key not in meshes:
            meshes[key] = original_mesh.fget(self)
        return meshes[key]

    def coordinates(mesh_tensor: torch.Tensor, rank: int):
        key = (tuple(mesh_tensor.shape), tuple(mesh_tensor.stride()), mesh_tensor.storage_offset(),
               mesh_tensor.untyped_storage().data_ptr(), rank)
        if key not in coords:
            coords[key] = original_coords(mesh_tensor, rank)
        return coords[key]

    DeviceMesh.mesh = property(mesh)
    DeviceMesh._compute_coordinates_from_mesh = staticmethod(coordinates)
    try:
        yield
    finally:
        DeviceMesh.mesh = original_mesh
        DeviceMesh._compute_coordinates_from_mesh = staticmethod(original_coords)


def pipeline_memory(runner) -> dict[str, int]:
    """Bytes of a pipeline rank without running its step: gradients are shaped like the (sharded)
    parameters, and AdamW keeps two moments of each plus a 4-byte fp32 step counter per tensor."""
    params = list(runner.parameters())
    count, size = tensor_bytes(params)
    return {"param_count": count, "param_bytes": size, "grad_bytes": size, "optimizer_bytes": 2 * size + 4 * len(params)}


def pipeline_collectives(cfg: Config, model_cfg, layout, mesh, runner, accum: int) -> list[Collective]:
    """The collectives of one pipeline rank's step, from the schedule's structure: activations sent
    forward and gradients back per micro batch piece, FSDP gathering each unit once and reducing its
    gradients once per step (pp keeps the weights gathered), tensor-parallel gathers and scatters."""
    import torch.distributed as dist

    def ranks(dim: str) -> tuple[int, ...]:
        return tuple(dist.get_process_group_ranks(mesh[dim].get_group()))

    act = 2 if cfg.parallel.mixed_precision == "bf16" else 4
    pieces = accum * layout.num_microbatches
    piece_tokens = cfg.data.micro_batch // layout.num_microbatches * cfg.data.seq_len
    hidden = piece_tokens * model_cfg.dim * act // (layout.tp if layout.sequence_parallel and layout.tp > 1 else 1)
    calls: list[Collective] = []
    stages = layout.pp * layout.pp_virtual_stages
    pp = ranks("pp")
    for stage in runner.stage_indices:
        for _ in range(pieces):
            if stage > 0:
                calls += [Collective("recv", pp, hidden, "activation"), Collective("send", pp, hidden, "activation")]
            if stage < stages - 1:
                calls += [Collective("send", pp, hidden, "activation"), Collective("recv", pp, hidden, "activation")]
    if layout.data_parallel_mode in ("fsdp", "hsdp"):
        shard = ranks("dp_shard")
        gather = 2 if cfg.parallel.mixed_precision == "bf16" else 4
        for part in runner.model_parts:
            for unit in _fsdp_units(part):
                numel = sum(p.numel() for p in unit) * layout.dp_shard
                calls += [Collective("all_gather", shard, numel * gather, "param"),
                          Collective("reduce_scatter", shard, numel * 4, "grad")]
                if layout.dp_replicate > 1:
                    calls.append(Collective("all_reduce", ranks("dp_replicate"), numel * 4 // layout.dp_shard, "grad"))
    if layout.tp > 1:
        tp, full = ranks("tp"), piece_tokens * model_cfg.dim * act
        for part in runner.model_parts:
            blocks = len(getattr(part, "layers", {}) or {})
            for _ in range(pieces * blocks * 4):  # attention and MLP, forward and backward
                calls += [Collective("all_gather", tp, full, "activation"), Collective("reduce_scatter", tp, full, "activation")]
    return calls


def _fsdp_units(module) -> list[list[torch.Tensor]]:
    """The local shards of each FSDP unit (each block, then the rest), as apply_fsdp groups them."""
    from torch.distributed.tensor import DTensor

    layers = getattr(module, "layers", None)
    blocks = list(layers.values()) if layers is not None else []
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    units = [[p.to_local() if isinstance(p, DTensor) else p for p in block.parameters()] for block in blocks]
    rest = [p.to_local() if isinstance(p, DTensor) else p for p in module.parameters() if id(p) not in in_blocks]
    return [unit for unit in (*units, rest) if unit]


class _MetaStream(torch.cpu.Stream):
    """A stream of the meta device: nothing runs, so every event has already happened."""

    def record_event(self, event=None):
        return torch.cpu.Event()


class _MetaDeviceHandle:
    """torch.cpu's no-op streams, with events that exist (FSDP checks for them off the CPU)."""

    Stream = _MetaStream
    _current = _MetaStream()

    def current_stream(self, device=None) -> _MetaStream:
        return self._current

    def stream(self, stream) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def __getattr__(self, name: str):
        return getattr(torch.cpu, name)


@contextlib.contextmanager
def _fsdp_accepts_meta(runner):
    """FSDP2 refuses to run on meta parameters (a guard for real training) and stages its buffers on
    the mesh's device type; a dry run wants shapes without storage, so for the step the guard is
    lifted and every FSDP group works on the meta device."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    meta = torch.device("meta")
    for part in runner.model_parts:
        for module in part.modules():
            for name, buffer in module._buffers.items():  # FSDP moved them to the mesh's device
                if buffer is not None and not buffer.is_meta:
                    module._buffers[name] = buffer.to(meta)
            state = module._get_fsdp_state() if isinstance(module, FSDPModule) else None
            group = state._fsdp_param_group if state is not None else None
            if state is not None:
                state._device = meta
            if group is not None:
                group.device = meta
                group._all_gather_output = torch.empty(0, device=meta)
                for param in group.fsdp_params:
                    param.device = meta
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives, _fsdp_param_group

    handle = _fsdp_param_group._get_device_handle
    saved = (FSDPParamGroup._validate_no_meta_params, _fsdp_collectives._get_device_handle, handle)
    FSDPParamGroup._validate_no_meta_params = lambda self: None
    _fsdp_collectives._get_device_handle = _fsdp_param_group._get_device_handle = (
        lambda kind: _MetaDeviceHandle() if kind == "meta" else handle(kind))
    try:
        yield
    finally:
        (FSDPParamGroup._validate_no_meta_params, _fsdp_collectives._get_device_handle,
         _fsdp_param_group._get_device_handle) = saved


def role_ranks(layout) -> list[int]:
    """One rank per distinct role: the first and the last pipeline stage, at the first position of
    every other dimension (FSDP pads the last shards, so the first ones hold the most)."""
    stride = layout.world_size // layout.pp
    return sorted({0, (layout.pp - 1) * stride})


def _simulate_in_child(cfg: Config, rank: int, world_size: int) -> RankState:
    from auroragpt.train.trainer import check_layout, resolve_model_config

    model_cfg = resolve_model_config(cfg)
    return simulate_rank(cfg, model_cfg, check_layout(cfg, model_cfg, world_size), rank)


def dry_run(cfg: Config, world_size: int, ranks: list[int] | None = None, workers: int | None = None) -> dict[str, Any]:
    """Simulate the roles (or `ranks`) of an N-rank job, each in its own fresh process (torch keeps
    per-process state about process groups), as many at a time as there are CPUs."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from auroragpt.train.trainer import check_layout, resolve_model_config

    model_cfg = resolve_model_config(cfg)
    layout = check_layout(cfg, model_cfg, world_size)  # a bad layout fails here, before any child starts
    ranks = ranks if ranks is not None else role_ranks(layout)
    bad = [rank for rank in ranks if not 0 <= rank < world_size]
    if bad:
        from auroragpt.errors import ConfigError

        raise ConfigError(f"rank(s) {bad} are outside the job's {world_size} ranks", hint=f"choose ranks 0 to {world_size - 1}")
    workers = workers or max(1, min(len(ranks), os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        states = list(pool.map(_simulate_in_child, [cfg] * len(ranks), ranks, [world_size] * len(ranks)))
    return {"layout": layout, "model_cfg": model_cfg, "ranks": states}
