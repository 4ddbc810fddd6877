"""What a dry run cannot measure on a laptop: activation memory, step time, MFU and whether a
rank fits its device, from the rank's measured state and ONE device table (train/metrics.DEVICES).

Activation bytes per token and layer follow the model's own code (RMSNorm, GQA attention with a
fused flash kernel that keeps no score matrix, SwiGLU MLP), as in Korthikanti et al., "Reducing
Activation Recomputation in Large Transformer Models" (2022): what each op saves for backward.
Step time is compute at the device's peak plus the communication that cannot hide behind it, so
the MFU it implies is a bound to compare layouts with, not a promise.
"""

from __future__ import annotations

import dataclasses

from auroragpt.runtime.collectives import Collective
from auroragpt.train.metrics import DEVICES, DeviceSpec, device_spec

RESERVED_FRACTION = 0.10  # allocator fragmentation, workspace and runtime outside our tensors
# An assumption, stated in the report: large bf16 matrix products sustain about this share of the
# data-sheet peak on every device of the table; the rest of the step is what the layout adds.
MATMUL_EFFICIENCY = 0.7


@dataclasses.dataclass(frozen=True)
class Activations:
    """Bytes one micro batch piece keeps for backward on this rank, per checkpointing mode, and
    how many pieces are alive at once (1F1B: up to pp on the first stage)."""

    none: int
    selective: int  # matrix-product and attention outputs kept; norms, rotary and SiLU recomputed
    full: int  # each block's input kept, one block recomputed at a time
    in_flight: int

    def for_mode(self, mode: str) -> int:
        return {"none": self.none, "selective": self.selective}.get(mode, self.full)


def activation_bytes(cfg, model_cfg, layout, stages: list[int]) -> Activations:
    """Bytes saved for backward by one micro batch piece on a rank that runs `stages`."""
    e = 2 if cfg.parallel.mixed_precision == "bf16" else 4
    tp = layout.tp
    sp = tp if layout.sequence_parallel and tp > 1 else 1
    pieces = layout.num_microbatches if layout.pp > 1 else 1
    tokens = cfg.data.micro_batch // pieces * cfg.data.seq_len
    h, kv, ffn = model_cfg.dim, model_cfg.n_kv_heads * model_cfg.head_dim, model_cfg.ffn_dim
    lse = 4 * model_cfg.n_heads / tp  # the attention kernel's fp32 log-sum-exp per head
    kept = e * (2 * h / sp + (h + 2 * kv) / tp + h / tp) + lse  # norm inputs, q/k/v, attention output
    full_layer = kept + e * (2 * h + 4 * ffn / tp)  # + norm outputs (gathered), w1, w3, silu(w1), product
    selective_layer = kept + e * 2 * ffn / tp  # w1 and w3 outputs; the rest is recomputed
    num_stages = layout.pp * layout.pp_virtual_stages
    layers = model_cfg.n_layers * len(stages) // num_stages
    last = (num_stages - 1) in stages
    head = tokens * (model_cfg.vocab_size / tp * (e + 4) + h * e) if last else 0  # logits + fp32 loss copy
    in_flight = 1
    if layout.pp > 1:
        in_flight = min(layout.num_microbatches, layout.pp - min(stages) % layout.pp)
    return Activations(int(tokens * full_layer * layers + head), int(tokens * selective_layer * layers + head),
                       int(tokens * (e * h / sp * layers + full_layer) + head), in_flight)


def _ring_seconds(call: Collective, spec: DeviceSpec, ranks_per_node: int) -> float:
    """Bandwidth cost of one collective on a ring: (n-1)/n of the buffer (x2 for all-reduce), over
    the device's link when the group stays inside a node, else over its network share."""
    n = call.group_size
    if call.op in ("send", "recv"):
        factor = 1.0
    elif n <= 1:
        return 0.0
    else:
        factor = (n - 1) / n * (2 if call.op == "all_reduce" else 1)
    nodes = {rank // ranks_per_node for rank in call.ranks}
    bandwidth = spec.link_bw if len(nodes) <= 1 else spec.network_bw
    return call.nbytes * factor / bandwidth if bandwidth else 0.0


@dataclasses.dataclass(frozen=True)
class Prediction:
    device: str
    compute_s: float
    exposed_comm_s: float
    step_s: float
    mfu: float
    memory_bytes: int
    hbm_bytes: float
    fits: bool


def predict(cfg, model_cfg, layout, state, device: str, ranks_per_node: int) -> Prediction:
    """Step time, MFU and memory of one rank on `device` (a name from the device table)."""
    spec = device_spec(device)
    if spec is None:
        raise KeyError(device)
    tokens_per_rank = cfg.data.global_batch * cfg.data.seq_len / layout.world_size
    flops = model_cfg.flops_per_token(cfg.data.seq_len) * tokens_per_rank
    compute = flops / (spec.peak_bf16 * MATMUL_EFFICIENCY)
    recompute = 4 / 3 if cfg.parallel.activation_checkpointing == "full" else 1.0  # the forward runs twice
    compute *= recompute
    tensor_parallel = sum(_ring_seconds(c, spec, ranks_per_node) for c in state.collectives
                          if c.dtype == "activation" or c.group_size == layout.tp > 1)
    overlapped = sum(_ring_seconds(c, spec, ranks_per_node) for c in state.collectives) - tensor_parallel
    bubble = compute * (layout.pp - 1) / (layout.num_microbatches * layout.pp_virtual_stages) if layout.pp > 1 else 0.0
    exposed = tensor_parallel + max(0.0, overlapped - compute) + bubble
    step = compute + exposed
    acts = activation_bytes(cfg, model_cfg, layout, state.stages)
    per_piece = acts.for_mode(cfg.parallel.activation_checkpointing)
    gathered = 2 * max((c.nbytes for c in state.collectives if c.op == "all_gather" and c.dtype != "activation"), default=0)
    memory = state.param_bytes + state.grad_bytes + state.optimizer_bytes + per_piece * acts.in_flight + gathered
    return Prediction(device, compute, exposed, step, compute / recompute / step, memory, spec.hbm_bytes, memory <= spec.hbm_bytes * (1 - RESERVED_FRACTION))


def device_names() -> list[str]:
    """The device table's names, for --device choices and the all-devices summary."""
    return [name for name, _ in DEVICES]
