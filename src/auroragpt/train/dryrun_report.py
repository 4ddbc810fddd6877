"""The dry run's report: one block per simulated rank, a verdict per device of the table."""

from __future__ import annotations

from collections import defaultdict

from auroragpt.train.dryrun_estimate import MATMUL_EFFICIENCY, activation_bytes, device_names, predict

GIB = 2**30


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def _collective_lines(state, ranks_per_node: int) -> list[str]:
    """Collectives grouped by (op, group size, bytes, kind), with whether the group spans nodes."""
    groups: dict[tuple, list] = defaultdict(list)
    for call in state.collectives:
        groups[(call.op, call.group_size, call.nbytes, call.dtype)].append(call)
    lines = []
    for (op, size, nbytes, dtype), calls in sorted(groups.items(), key=lambda item: -item[0][2] * len(item[1])):
        nodes = len({rank // ranks_per_node for rank in calls[0].ranks})
        where = "inside a node" if nodes <= 1 else f"across {nodes} nodes"
        lines.append(f"    {len(calls):4d} x {op:<14} {nbytes / 2**20:12,.2f} MiB {dtype:<10} group of {size} ({where})")
    return lines


def format_report(result: dict, cfg, device: str, ranks_per_node: int) -> str:
    """Text a user reads before asking for 10,000 nodes."""
    layout, model_cfg = result["layout"], result["model_cfg"]
    lines = [
        f"dry run: {model_cfg.num_params() / 1e9:,.2f}B parameters on {layout.world_size:,} ranks "
        f"({layout.world_size // ranks_per_node:,} nodes x {ranks_per_node}), layout pp={layout.pp} "
        f"dp_replicate={layout.dp_replicate} dp_shard={layout.dp_shard} tp={layout.tp} ({layout.data_parallel_mode})",
        f"batch: {cfg.data.global_batch:,} x {cfg.data.seq_len:,} tokens per step, micro batch {cfg.data.micro_batch}, "
        f"activation checkpointing {cfg.parallel.activation_checkpointing}, {cfg.parallel.mixed_precision}",
    ]
    for state in result["ranks"]:
        acts = activation_bytes(cfg, model_cfg, layout, state.stages)
        coords = " ".join(f"{k}={v}" for k, v in state.coords.items())
        lines += [
            "",
            f"rank {state.rank} ({coords}; pipeline stage(s) {state.stages})",
            f"  parameters   {state.param_count:>16,}  {_gib(state.param_bytes)}",
            f"  gradients    {'':>16}  {_gib(state.grad_bytes)}",
            f"  optimizer    {'':>16}  {_gib(state.optimizer_bytes)}",
            f"  activations per micro batch: {_gib(acts.none)} without checkpointing, {_gib(acts.selective)} "
            f"selective, {_gib(acts.full)} full; {acts.in_flight} in flight",
            f"  collectives of one step ({len(state.collectives)} calls):",
            *_collective_lines(state, ranks_per_node),
        ]
        lines.append(f"  device          step time     MFU   memory / HBM          fits   "
                     f"(matrix products at {MATMUL_EFFICIENCY:.0%} of peak)")
        for name in [device] + [n for n in device_names() if n != device]:
            p = predict(cfg, model_cfg, layout, state, name, ranks_per_node)
            lines.append(f"  {name:<12} {p.step_s:10.3f} s  {p.mfu:5.1%}   {_gib(p.memory_bytes):>10} / {_gib(p.hbm_bytes):>10}  "
                         f"{'yes' if p.fits else 'NO'}")
    verdicts = [predict(cfg, model_cfg, layout, s, device, ranks_per_node) for s in result["ranks"]]
    worst = max(verdicts, key=lambda p: p.memory_bytes)
    lines += ["", f"verdict on {device}: {'fits' if all(p.fits for p in verdicts) else 'does NOT fit'} "
              f"(largest rank {_gib(worst.memory_bytes)} of {_gib(worst.hbm_bytes)}, 10% kept free); "
              f"predicted step {max(p.step_s for p in verdicts):.3f} s, MFU at most {min(p.mfu for p in verdicts):.1%}"]
    return "\n".join(lines)
