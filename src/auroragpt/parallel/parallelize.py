"""One call that spreads a single-device GPT over the mesh, and one step API that hides how.

Order (as in torchtitan): pipeline split -> tensor/sequence parallel -> activation checkpointing
-> torch.compile per block -> FSDP2 or DDP. The trainer then only calls `train_step`,
`clip_grad_norm_` and `parameters()`; it never learns which parallelism is on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from auroragpt.errors import ConfigError
from auroragpt.parallel.activation_checkpoint import apply_activation_checkpoint
from auroragpt.parallel.compile import apply_compile
from auroragpt.parallel.data_parallel import apply_ddp, apply_fsdp, set_gradient_sync
from auroragpt.parallel.layout import ParallelLayout
from auroragpt.parallel.pipeline import build_pipeline_stages, build_schedule, split_into_stages
from auroragpt.parallel.tensor import apply_tensor_parallel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ParallelModel:
    """The parallelized model parts of this rank with a layout-independent training step.

    `model_parts` holds one module, or one per pipeline stage on this rank; each keeps the
    single-device parameter names (DDP adds "module.", which torch.distributed.checkpoint strips).
    """

    def __init__(
        self,
        model_parts: list[nn.Module],
        layout: ParallelLayout,
        mesh: DeviceMesh | None,
        device: torch.device,
        *,
        mixed_precision: bool,
        stages: list | None = None,
        stage_indices: list[int] | None = None,
    ) -> None:
        self.model_parts = model_parts
        self.layout = layout
        self.mesh = mesh
        self.device = device
        self.mixed_precision = mixed_precision
        self._stages = stages or []
        num_stages = layout.pp * layout.pp_virtual_stages
        indices = stage_indices if stage_indices is not None else [0]
        self.stage_indices = list(indices)
        self.is_first_stage = 0 in indices
        self.is_last_stage = (num_stages - 1) in indices
        self._schedule = None
        self._loss_fn: LossFn | None = None
        self._loss_scale = 1.0

    # ----------------------------------------------------------------- plain module-like helpers
    def parameters(self) -> Iterator[nn.Parameter]:
        seen: set[int] = set()
        for part in self.model_parts:
            for p in part.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for part in self.model_parts:
            yield from part.named_parameters()

    def train(self, mode: bool = True) -> "ParallelModel":
        for part in self.model_parts:
            part.train(mode)
        return self

    def eval(self) -> "ParallelModel":
        return self.train(False)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Allocate and initialise parts built on the meta device (a model too big for one device).

        Values differ from a single-device init but have the same distribution. Each pipeline
        stage and each shard position (tp rank, dp_shard rank) draws from its own seed, so no two
        layers or shards repeat one another (DTensor's own sharded RNG covers only some devices),
        while replicas (dp_replicate) draw identically and stay in sync.
        """
        for stage, part in zip(self.stage_indices, self.model_parts):
            gpt = getattr(part, "module", part)  # under DDP
            if any(p.is_meta for p in gpt.parameters()) or any(b.is_meta for b in gpt.buffers()):
                gpt.to_empty(device=self.device)
            torch.manual_seed(seed + 1_000_003 * self._shard_position(stage))
            gpt.init_weights()

    def _shard_position(self, stage: int) -> int:
        if self.mesh is None:
            return 0
        tp_rank, shard_rank = self.mesh.get_local_rank("tp"), self.mesh.get_local_rank("dp_shard")
        return (stage * self.layout.tp + tp_rank) * self.layout.dp_shard + shard_rank

    # ----------------------------------------------------------------- the step
    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, grad_accum: int = 1) -> torch.Tensor:
        """Forward + backward over `grad_accum` equal slices of the batch; gradients accumulate.

        tokens/targets: [grad_accum x micro_batch, T] for this data-parallel rank (ranks that
        differ only in tp or pp get the same batch). loss_fn(logits, targets) must return the mean
        loss of its slice. Returns the mean loss over the global batch, the same on every rank
        (detached). The caller then clips, steps the optimizer and zeroes the gradients.
        """
        if tokens.shape[0] % grad_accum:
            raise ConfigError(f"train_step: batch of {tokens.shape[0]} rows does not split into grad_accum = {grad_accum} equal slices")
        tokens = tokens.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self._stages:
            local = self._pipeline_step(tokens, targets, loss_fn, grad_accum, train=True)
        else:
            local = self._plain_step(tokens, targets, loss_fn, grad_accum)
        return self._average_over_ranks(local)

    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """Mean loss of a batch without gradients, the same on every rank."""
        tokens, targets = tokens.to(self.device), targets.to(self.device)
        if self._stages:
            local = self._pipeline_step(tokens, targets, loss_fn, 1, train=False)
        else:
            with self._loss_context(), self._autocast():
                local = _local_value(loss_fn(self.model_parts[0](tokens), targets))
        return self._average_over_ranks(local)

    def _plain_step(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, grad_accum: int) -> torch.Tensor:
        model = self.model_parts[0]
        total = torch.zeros((), device=self.device, dtype=torch.float32)
        for i, (x, y) in enumerate(zip(tokens.chunk(grad_accum), targets.chunk(grad_accum))):
            last = i == grad_accum - 1
            set_gradient_sync(model, last)
            no_sync = model.no_sync() if (not last and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with no_sync, self._loss_context():
                with self._autocast():
                    args, kwargs = _model_inputs(x)
                    loss = loss_fn(model(*args, **kwargs), y)
                (loss / grad_accum).backward()
            total += _local_value(loss)
        return total / grad_accum

    def _pipeline_step(self, tokens: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, grad_accum: int, *, train: bool) -> torch.Tensor:
        schedule = self._get_schedule()
        self._loss_fn = loss_fn
        # The schedule sums microbatch losses' gradients (scale_grads=False); dividing each by the
        # number of pieces makes the accumulated gradient that of the mean loss.
        self._loss_scale = 1.0 / (grad_accum * self.layout.num_microbatches)
        losses: list[torch.Tensor] = []
        for x, y in zip(tokens.chunk(grad_accum), targets.chunk(grad_accum)):
            losses.extend(self._run_schedule(schedule, x, y, train))
        if not self.is_last_stage:
            return torch.zeros((), device=self.device)
        return torch.stack([_local_value(l) for l in losses]).sum()

    def _run_schedule(self, schedule, x: torch.Tensor, y: torch.Tensor, train: bool) -> list[torch.Tensor]:
        """One schedule step (or forward-only pass); the loss_fn values of its micro-batches on the
        last stage. Every stage gets the keyword inputs (packed rows' document ids), the first
        stage the tokens too."""
        values: list[torch.Tensor] = []  # the schedule clears the list it is given
        args, kwargs = _model_inputs(x)
        args = args if self.is_first_stage else ()
        if self.is_last_stage:
            kwargs = {**kwargs, "target": y, "losses": values}
        with self._loss_context(), self._autocast():
            if train:
                schedule.step(*args, **kwargs)
            else:
                schedule.eval(*args, **kwargs)
        return values

    @torch.no_grad()
    def eval_rows(self, tokens: torch.Tensor, targets: torch.Tensor, row_fn: LossFn, chunks: int = 1) -> torch.Tensor | None:
        """row_fn(output, targets) of a batch, one value per row, without gradients, `chunks` equal
        slices at a time (a frozen DPO reference). Under pipeline parallelism only the ranks of the
        last stage get the values; the others get None."""
        tokens, targets = tokens.to(self.device), targets.to(self.device)
        out: list[torch.Tensor] = []
        for x, y in zip(tokens.chunk(chunks), targets.chunk(chunks)):
            if self._stages:
                self._loss_fn, self._loss_scale = row_fn, 1.0
                out.extend(self._run_schedule(self._get_schedule(), x, y, train=False))
            else:
                args, kwargs = _model_inputs(x)
                with self._loss_context(), self._autocast():
                    out.append(row_fn(self.model_parts[0](*args, **kwargs), y))
        return torch.cat(out) if (out and self.is_last_stage) else None

    def _get_schedule(self):
        if self._schedule is None:

            def scaled_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return self._loss_fn(output, target) * self._loss_scale

            self._schedule = build_schedule(self._stages, self.layout, scaled_loss)
        return self._schedule

    def _autocast(self):
        """bf16 autocast when mixed precision is on and FSDP does not already cast the weights."""
        if self.mixed_precision and self.layout.dp_shard == 1:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss_context(self):
        if self.layout.tp > 1 and self.layout.loss_parallel:
            from torch.distributed.tensor.parallel import loss_parallel

            return loss_parallel()
        return contextlib.nullcontext()

    def _average_over_ranks(self, local: torch.Tensor) -> torch.Tensor:
        """Mean over data-parallel replicas; pipeline ranks without the loss add zero."""
        if self.mesh is None or self.layout.world_size == 1:
            return local
        holders = self.layout.dp * self.layout.tp  # ranks on the last stage hold a copy each
        value = (local if self.is_last_stage else torch.zeros_like(local)) / holders
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    # ----------------------------------------------------------------- gradient clipping
    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip by the norm of the whole model's gradient, counting every shard exactly once.

        DTensor gradients (FSDP, TP) are reduced per group of equal mesh/placements; pipeline
        stages add their parts over the pp group. Returns the total norm before clipping.
        """
        groups = _group_grads([p.grad for p in self.parameters() if p.grad is not None])
        total = _total_grad_norm(groups, norm_type, self._pp_group(), self.device)
        if max_norm > 0:
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for grads in groups.values():
                torch._foreach_mul_(grads, _like(grads[0], coef))
        return total

    def _pp_group(self):
        if self.mesh is None or self.layout.pp == 1:
            return None
        return self.mesh["pp"].get_group()


def _model_inputs(x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """Integer [b, 2, T] inputs are packed rows: token ids, and the document id of each token (which
    every pipeline stage needs for its attention mask and positions); anything else (token rows, a
    weather model's float fields) goes in whole."""
    if x.dim() == 3 and x.shape[1] == 2 and not x.is_floating_point():
        return (x[:, 0],), {"documents": x[:, 1]}
    return (x,), {}


def _local_value(loss: torch.Tensor) -> torch.Tensor:
    """A detached fp32 scalar; a loss-parallel loss is a replicated DTensor, made plain here."""
    from torch.distributed.tensor import DTensor

    loss = loss.detach()
    if isinstance(loss, DTensor):
        loss = loss.full_tensor()
    return loss.float()


def _group_grads(grads: list[torch.Tensor]) -> dict[object, list[torch.Tensor]]:
    """Gradients grouped so each group is one kind: plain, or DTensor on one mesh and placement."""
    from torch.distributed.tensor import DTensor

    groups: dict[object, list[torch.Tensor]] = {}
    for g in grads:
        key = (id(g.device_mesh), tuple(g.placements)) if isinstance(g, DTensor) else ("local", g.device)
        groups.setdefault(key, []).append(g)
    return groups


def _like(grad: torch.Tensor, scalar: torch.Tensor) -> torch.Tensor:
    """The scalar as something foreach ops accept next to `grad` (a replicated DTensor if need be)."""
    from torch.distributed.tensor import DTensor, Replicate

    scalar = scalar.to(grad.device)
    if isinstance(grad, DTensor):
        return DTensor.from_local(scalar, grad.device_mesh, [Replicate()] * grad.device_mesh.ndim, run_check=False)
    return scalar


def _total_grad_norm(groups: dict[object, list[torch.Tensor]], norm_type: float, pp_group, device: torch.device) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    norm_type = float(norm_type)
    is_inf = math.isinf(norm_type)
    acc = torch.zeros((), dtype=torch.float32, device=device)
    for group in groups.values():
        # (foreach kernels exist for real devices; a dry run's meta tensors take the plain loop)
        norm = torch.nn.utils.get_total_norm(group, norm_type, foreach=None if group[0].is_meta else True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norm = norm.float().to(device)
        acc = torch.maximum(acc, norm) if is_inf else acc + norm**norm_type
    if pp_group is not None:
        dist.all_reduce(acc, op=dist.ReduceOp.MAX if is_inf else dist.ReduceOp.SUM, group=pp_group)
    return acc if is_inf else acc ** (1.0 / norm_type)


def parallelize(
    model: nn.Module,
    layout: ParallelLayout,
    mesh: DeviceMesh | None,
    *,
    mixed_precision: bool = False,
    activation_checkpoint: bool | str | int | None = "none",
    compile: bool = False,
    device: torch.device | str | None = None,
) -> ParallelModel:
    """Apply the layout to a single-device GPT and return this rank's ParallelModel.

    `layout` must come from `validate` (dp_shard resolved). The model should hold the same
    weights on every rank (same seed), or be on the meta device and initialised afterwards via
    `ParallelModel.model_parts` (each part tolerates missing layers and None submodules).
    """
    if layout.dp_shard < 1:
        raise ConfigError("parallelize() needs a resolved layout; call auroragpt.parallel.layout.validate first")
    if mesh is None and layout.world_size != 1:
        raise ConfigError(f"parallel layout spans {layout.world_size} ranks but no device mesh was given")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None and param.device.type != "meta" else torch.device(
            mesh.device_type if mesh is not None else "cpu"
        )
    device = torch.device(device)

    if layout.pp > 1:
        parts = split_into_stages(model, mesh.get_local_rank("pp"), layout)
    else:
        parts = [(0, model)]

    wrapped: list[tuple[int, nn.Module]] = []
    for index, part in parts:
        if layout.tp > 1:
            apply_tensor_parallel(part, mesh["tp"], sequence_parallel=layout.sequence_parallel, loss_parallel=layout.loss_parallel)
        apply_activation_checkpoint(part, activation_checkpoint)
        if compile:
            apply_compile(part)
        mode = layout.data_parallel_mode
        if mode == "fsdp":
            part = apply_fsdp(part, mesh["dp_shard"], mixed_precision=mixed_precision, reshard_after_forward=layout.pp == 1)
        elif mode == "hsdp":
            part = apply_fsdp(part, mesh["dp_replicate", "dp_shard"], mixed_precision=mixed_precision, reshard_after_forward=layout.pp == 1)
        elif mode == "ddp":
            part = apply_ddp(part, mesh["dp_replicate"])
        wrapped.append((index, part))

    stages = None
    if layout.pp > 1:
        stages = build_pipeline_stages(wrapped, layout, mesh["pp"], device)
    return ParallelModel(
        [m for _, m in wrapped],
        layout,
        mesh,
        device,
        mixed_precision=mixed_precision,
        stages=stages,
        stage_indices=[i for i, _ in wrapped],
    )
