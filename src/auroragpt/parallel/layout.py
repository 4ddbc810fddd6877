"""How the world is cut into parallel dimensions, and the checks that run before any group exists.

A layout is four sizes, pp x dp_replicate x dp_shard x tp = world size, plus pipeline options;
a weather model adds SWiPe's wp x sp ranks per sample (`auroragpt.parallel.window_train`).
`validate` rejects impossible combinations with the numbers in the message, so a 768-rank job
fails in a second on rank 0 rather than hanging in a collective after the model is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auroragpt.errors import ConfigError

if TYPE_CHECKING:  # only for hints; keeps this module free of torch at import time
    from torch.distributed.device_mesh import DeviceMesh

    from auroragpt.model.presets import ModelConfig

# The one table of pipeline schedules: name -> whether it runs several virtual stages per rank.
PP_SCHEDULES: dict[str, bool] = {"1F1B": False, "GPipe": False, "Interleaved1F1B": True}

# Mesh dimension names, outermost first (pp crosses nodes, tp stays inside one).
MESH_DIMS: tuple[str, ...] = ("pp", "dp_replicate", "dp_shard", "tp")
# Appended, innermost, when a weather model runs SWiPe (wp x sp > 1).
WINDOW_DIMS: tuple[str, ...] = ("wp", "sp")


@dataclass(frozen=True)
class ParallelLayout:
    """Sizes of each parallel dimension and the pipeline options.

    dp_shard = -1 means "whatever is left of the world" (resolved by `resolve`). dp_shard > 1 uses
    FSDP2, hybrid (HSDP) when dp_replicate > 1 as well. Pure replicas (dp_shard == 1) use DDP on
    their own, and FSDP2 over a replicate-only mesh next to tp or pp, which DDP cannot join: it
    neither understands DTensor parameters nor several forwards before one backward.
    """

    dp_replicate: int = 1
    dp_shard: int = -1
    tp: int = 1
    pp: int = 1
    pp_schedule: str = "1F1B"
    pp_microbatches: int = 0  # 0: one per pipeline rank (pp)
    pp_virtual_stages: int = 1  # stages per pipeline rank; > 1 only with Interleaved1F1B
    sequence_parallel: bool = True  # with tp > 1, shard norms and residuals along the sequence
    loss_parallel: bool = False  # with tp > 1, keep logits sharded over the vocabulary for the loss
    wp: int = 1  # weather models: window-parallel tiles, wp_lat rows of them in latitude
    wp_lat: int = 1
    sp: int = 1  # weather models: sequence-parallel ranks inside each tile

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "[parallel]") -> "ParallelLayout":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @property
    def dp(self) -> int:
        """Data-parallel degree: how many different batches are processed at once."""
        return self.dp_replicate * self.dp_shard

    @property
    def window(self) -> int:
        """Ranks that share one sample's field (SWiPe's wp x sp; 1 for language models)."""
        return self.wp * self.sp

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp * self.window

    @property
    def num_microbatches(self) -> int:
        return self.pp_microbatches or self.pp

    @property
    def data_parallel_mode(self) -> str:
        """'fsdp', 'hsdp', 'ddp' or 'none' (derived from the sizes, never set separately)."""
        if self.dp_shard > 1:
            return "hsdp" if self.dp_replicate > 1 else "fsdp"
        if self.dp_replicate > 1:
            return "ddp" if self.tp == 1 and self.pp == 1 else "hsdp"
        return "none"

    def resolve(self, world_size: int) -> "ParallelLayout":
        """Fill in dp_shard = -1 from the world size (checked for divisibility)."""
        if self.dp_shard != -1:
            return self
        others = self.pp * self.dp_replicate * self.tp * self.window
        if others <= 0 or world_size % others:
            window = f" x wp ({self.wp}) x sp ({self.sp})" if self.window > 1 else ""
            raise ConfigError(
                f"parallel layout: world size {world_size} is not divisible by "
                f"pp ({self.pp}) x dp_replicate ({self.dp_replicate}) x tp ({self.tp}){window} = {others}, "
                "so dp_shard = -1 cannot fill the rest",
                hint=f"choose pp, dp_replicate and tp{' (and wp, sp)' if self.window > 1 else ''} whose product "
                "divides the number of ranks",
            )
        return dataclasses.replace(self, dp_shard=world_size // others)


def validate(
    layout: ParallelLayout,
    world_size: int,
    model_cfg: "ModelConfig",
    global_batch: int,
    micro_batch: int,
) -> ParallelLayout:
    """Check a layout against the world, the model and the batch sizes; return it resolved.

    Raises ConfigError naming the numbers that do not fit. Touches no process group.
    """
    for name in ("dp_replicate", "tp", "pp", "pp_virtual_stages", "wp", "wp_lat", "sp"):
        value = getattr(layout, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"parallel.{name} must be an integer >= 1, got {value!r}")
    if not isinstance(layout.dp_shard, int) or isinstance(layout.dp_shard, bool) or (
        layout.dp_shard < 1 and layout.dp_shard != -1
    ):
        raise ConfigError(f"parallel.dp_shard must be an integer >= 1 or -1 (fill the rest), got {layout.dp_shard!r}")
    if not isinstance(layout.pp_microbatches, int) or layout.pp_microbatches < 0:
        raise ConfigError(f"parallel.pp_microbatches must be an integer >= 0 (0: one per pipeline rank), got {layout.pp_microbatches!r}")
    _check_window(layout, model_cfg)  # before resolve: its message names the SWiPe sizes, not the product
    layout = layout.resolve(world_size)
    if layout.world_size != world_size:
        window = f" x wp ({layout.wp}) x sp ({layout.sp})" if layout.window > 1 else ""
        raise ConfigError(
            f"parallel layout pp ({layout.pp}) x dp_replicate ({layout.dp_replicate}) x dp_shard "
            f"({layout.dp_shard}) x tp ({layout.tp}){window} = {layout.world_size} ranks, but the job has {world_size}",
            hint="make the product equal the number of ranks, or set dp_shard = -1 to fill the rest",
        )
    _check_tensor_parallel(layout, model_cfg)
    _check_pipeline(layout, model_cfg)
    if hasattr(model_cfg, "grid_h") and layout.pp > 1 and layout.pp_virtual_stages > 1:
        raise ConfigError(f"parallel.pp_virtual_stages = {layout.pp_virtual_stages}: a weather model's pipeline runs "
                          "one stage per pipeline rank (micro-batches in GPipe order)",
                          hint="set pp_virtual_stages = 1 and pp_schedule = \"1F1B\" or \"GPipe\"")
    if hasattr(model_cfg, "grid_h") and layout.pp > 1 and layout.dp > 1:
        raise ConfigError(f"parallel.pp = {layout.pp} with dp_replicate x dp_shard = {layout.dp_replicate} x "
                          f"{layout.dp_shard}: a weather model's pipeline does not run beside data parallelism yet",
                          hint="set dp_shard = 1 and dp_replicate = 1 with pp > 1 (wp and sp may fill the rest), or pp = 1")
    _check_batches(layout, global_batch, micro_batch)
    return layout


def _check_window(layout: ParallelLayout, cfg) -> None:
    """SWiPe sizes: only for a weather model's grid, tiles and heads that divide (`WindowLayout`)."""
    if layout.window == 1 and layout.wp_lat == 1:
        return
    sizes = f"parallel.wp = {layout.wp}, wp_lat = {layout.wp_lat}, sp = {layout.sp}"
    if not hasattr(cfg, "grid_h"):
        raise ConfigError(f"{sizes}: window and sequence parallelism split a weather model's latitude-longitude "
                          "grid, and this model is a language model",
                          hint="set parallel.wp = 1, wp_lat = 1 and sp = 1; spread a language model with "
                          "tp, pp, dp_shard and dp_replicate")
    if layout.wp % layout.wp_lat:
        raise ConfigError(f"{sizes}: wp_lat ({layout.wp_lat}) must divide wp ({layout.wp}); the {layout.wp} tiles "
                          "are wp_lat rows in latitude x wp / wp_lat columns in longitude",
                          hint=f"choose wp_lat among the divisors of {layout.wp}")
    if layout.tp > 1:
        raise ConfigError(f"{sizes} with tp = {layout.tp}: a weather model does not use tensor parallelism",
                          hint="set parallel.tp = 1 (sp splits the heads inside a window tile)")
    from auroragpt.parallel.window_layout import WindowLayout

    WindowLayout.for_model(cfg, wp_h=layout.wp_lat, wp_w=layout.wp // layout.wp_lat, sp=layout.sp)


def _check_tensor_parallel(layout: ParallelLayout, cfg: "ModelConfig") -> None:
    tp = layout.tp
    if tp == 1:
        return
    for field in ("n_heads", "n_kv_heads", "ffn_dim"):
        value = getattr(cfg, field)
        if value % tp:
            raise ConfigError(
                f"model.{field} ({value}) is not divisible by tp ({tp}): tensor parallelism gives each "
                f"rank an equal share of the {field.replace('n_', '').replace('_', ' ')}",
                hint=f"choose tp among the divisors of {value} that also divide the other head counts",
            )
    if layout.loss_parallel and cfg.vocab_size % tp:
        raise ConfigError(
            f"model.vocab_size ({cfg.vocab_size}) is not divisible by tp ({tp}), which loss_parallel needs",
            hint="pad the vocabulary to a multiple of tp, or set parallel.loss_parallel = false",
        )


def _check_pipeline(layout: ParallelLayout, cfg: "ModelConfig") -> None:
    if layout.pp_schedule not in PP_SCHEDULES:
        raise ConfigError(
            f"parallel.pp_schedule {layout.pp_schedule!r} is not known",
            hint=f"choose one of {', '.join(PP_SCHEDULES)}",
        )
    interleaved = PP_SCHEDULES[layout.pp_schedule]
    v = layout.pp_virtual_stages
    if layout.pp > 1 and interleaved and v < 2:
        raise ConfigError(
            f"parallel.pp_schedule = {layout.pp_schedule} needs pp_virtual_stages >= 2, got {v}",
            hint="set pp_virtual_stages = 2 (or more), or use the 1F1B schedule",
        )
    if v > 1 and not interleaved:
        raise ConfigError(
            f"parallel.pp_virtual_stages = {v} needs an interleaved schedule, but pp_schedule = {layout.pp_schedule}",
            hint="set pp_schedule = \"Interleaved1F1B\", or pp_virtual_stages = 1",
        )
    if layout.pp == 1:
        return
    stages = layout.pp * v
    if cfg.n_layers % stages:
        raise ConfigError(
            f"model.n_layers ({cfg.n_layers}) is not divisible by pp ({layout.pp}) x pp_virtual_stages ({v}) "
            f"= {stages} pipeline stages",
            hint="choose pp and pp_virtual_stages so that every stage gets the same number of layers",
        )
    if cfg.tie_embeddings:
        raise ConfigError(
            f"model.tie_embeddings = true cannot be used with pp = {layout.pp}: the input embedding lives on the "
            "first pipeline stage and the output projection on the last, so they cannot share one matrix",
            hint="set model.tie_embeddings = false (a preset override) or pp = 1",
        )
    m = layout.num_microbatches
    if m < layout.pp:
        raise ConfigError(
            f"parallel.pp_microbatches ({m}) is smaller than pp ({layout.pp}); the pipeline would stay mostly idle "
            "and the 1F1B schedules refuse it",
            hint=f"set pp_microbatches to a multiple of {layout.pp}",
        )
    if interleaved and m % layout.pp:
        raise ConfigError(
            f"parallel.pp_microbatches ({m}) must be a multiple of pp ({layout.pp}) for {layout.pp_schedule}",
            hint=f"set pp_microbatches to a multiple of {layout.pp}",
        )


def _check_batches(layout: ParallelLayout, global_batch: int, micro_batch: int) -> None:
    grad_accum_steps(layout, global_batch, micro_batch)
    if layout.pp > 1 and micro_batch % layout.num_microbatches:
        raise ConfigError(
            f"data.micro_batch ({micro_batch}) is not divisible by parallel.pp_microbatches ({layout.num_microbatches}): "
            "the pipeline splits each micro batch into that many equal pieces",
            hint=f"make data.micro_batch a multiple of {layout.num_microbatches}",
        )


# The one table of whole-model data-parallel modes for a user's own module (`auroragpt.wrap`).
DATA_PARALLEL_MODES: tuple[str, ...] = ("ddp", "fsdp", "hsdp")


def data_parallel_layout(mode: str, world_size: int, num_nodes: int, replicate: int | None = None) -> ParallelLayout:
    """The layout of a pure data-parallel run: DDP replicas, FSDP shards, or HSDP (shards inside
    `replicate` groups, by default one group per node so all-gathers stay inside a node)."""
    if mode not in DATA_PARALLEL_MODES:
        raise ConfigError(f"data-parallel mode {mode!r} is not known", hint=f"choose one of {', '.join(DATA_PARALLEL_MODES)}")
    if mode == "ddp":
        return ParallelLayout(dp_replicate=world_size, dp_shard=1)
    if mode == "fsdp":
        return ParallelLayout(dp_replicate=1, dp_shard=world_size)
    groups = num_nodes if replicate is None else replicate
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or world_size % groups:
        raise ConfigError(
            f"hsdp: {world_size} rank(s) cannot be split into {groups!r} equal replica groups",
            hint="pass replicate= a divisor of the number of ranks (default: the number of nodes)",
        )
    return ParallelLayout(dp_replicate=groups, dp_shard=world_size // groups)


def grad_accum_steps(layout: ParallelLayout, global_batch: int, micro_batch: int) -> int:
    """Micro batches each data-parallel rank accumulates per optimizer step (the config's rule)."""
    from auroragpt.config_rules import grad_accum_steps as split_batch

    detail = f"dp_replicate {layout.dp_replicate} x dp_shard {layout.dp_shard} = {layout.dp}"
    return split_batch(global_batch, micro_batch, layout.dp, dp_detail=detail)


def build_mesh(layout: ParallelLayout, device_type: str) -> "DeviceMesh | None":
    """The 4-D device mesh ("pp", "dp_replicate", "dp_shard", "tp"); None on one process without a group.

    Size-1 dimensions are kept, so code may always ask for mesh["tp"] and the like.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_available() or not dist.is_initialized():
        if layout.world_size == 1:
            return None
        raise ConfigError(
            f"parallel layout needs {layout.world_size} ranks but torch.distributed is not initialised",
            hint="start the job through `auroragpt launch` (or torchrun) and call auroragpt.runtime.setup.setup() first",
        )
    world = dist.get_world_size()
    if layout.world_size != world:
        raise ConfigError(f"parallel layout covers {layout.world_size} ranks but the process group has {world}")
    shape, names = (layout.pp, layout.dp_replicate, layout.dp_shard, layout.tp), MESH_DIMS
    if layout.window > 1:  # SWiPe innermost: one sample's tiles are neighbouring ranks (window_layout's order)
        shape, names = shape + (layout.wp, layout.sp), names + WINDOW_DIMS
    mesh = init_device_mesh(device_type, shape, mesh_dim_names=names)
    if layout.tp > 1:
        # A gradient norm of FSDP x TP parameters is partial over both dims (dp_shard may be 1:
        # FSDP over replicas still places it there). With this flattened dim DTensor reduces it
        # in one all-reduce instead of two in a row (torch warns otherwise).
        mesh["dp_shard", "tp"]._flatten("dp_shard_tp")
    return mesh


def data_parallel_coordinates(layout: ParallelLayout, mesh: "DeviceMesh | None") -> tuple[int, int]:
    """(dp_rank, dp_size) for the data loader: ranks that differ only in tp or pp read the same batch."""
    if mesh is None:
        return 0, 1
    replicate = mesh.get_local_rank("dp_replicate")
    shard = mesh.get_local_rank("dp_shard")
    return replicate * layout.dp_shard + shard, layout.dp
