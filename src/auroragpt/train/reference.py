"""The DPO reference model: a frozen copy, or its log-probs precomputed once into a checked cache.

Live: the reference weights (post.reference_from, else checkpoint.init_from) are loaded into a
second model, parallelised with the policy's layout (FSDP2/TP shards alike; DDP replicas need
no wrapper; under pipeline parallelism it is cut into the policy's stages and run as a second,
forward-only schedule whose values land on the last stage, beside the policy's loss), with every
parameter frozen: no gradients, never in an optimizer.

Precomputed: the same frozen model computes the summed log-probs of every pair once; they are
written (atomically, by rank 0) to a cache named by a digest of the data (indexes and recipes,
which hold the tokenizer and chat-template digests), the reference checkpoint, seq_len and
precision. On every load a random `check_fraction` (0.5%, at least one pair) is recomputed and a
mismatch is refused: a cache that silently went stale would train against the wrong model.
The frozen model is then dropped, so training holds only the policy.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from auroragpt.atomic import write_atomically
from auroragpt.errors import DataError
from auroragpt.log import get_logger

log = get_logger(__name__)


def frozen_reference_model(cfg, runner, model_cfg, info):
    """The reference model on this rank, parallelised like the policy, parameters frozen."""
    from auroragpt.parallel.parallelize import parallelize
    from auroragpt.train.trainer import build_model, load_initial_weights

    model = build_model(model_cfg, info.device, cfg.train.seed)
    load_initial_weights(model, reference_source(cfg), model_cfg)
    model.requires_grad_(False)
    layout = runner.layout
    if layout.data_parallel_mode in ("ddp", "none") and layout.tp == 1 and layout.pp == 1:
        model.eval()
        return model
    ref = parallelize(model, layout, runner.mesh,
                      mixed_precision=cfg.parallel.mixed_precision == "bf16", device=info.device)
    ref.eval()
    # under pipeline parallelism the reference is cut into the policy's stages and runs as its own
    # forward-only schedule (ParallelModel.eval_rows); otherwise its one part is called directly
    return ref if layout.pp > 1 else ref.model_parts[0]


def _autocasts(cfg, layout) -> bool:
    """Whether the runner autocasts the policy to bf16 (FSDP2 casts the weights itself)."""
    return cfg.parallel.mixed_precision == "bf16" and layout.dp_shard == 1


def reference_source(cfg) -> str:
    return cfg.post.reference_from or cfg.checkpoint.init_from


@torch.no_grad()
def model_logps(model, tokens: torch.Tensor, targets: torch.Tensor, chunks: int, bf16: bool = False) -> torch.Tensor:
    """Summed log-probs of each row's loss tokens under `model`, computed `chunks` rows-groups at a
    time; `bf16` autocasts as the runner does for the policy when FSDP does not cast the weights.

    A pipelined reference (a ParallelModel) gives the values on the last stage, where the policy's
    loss needs them, and zeros on the other stages."""
    import contextlib

    from torch.distributed.tensor import DTensor

    from auroragpt.parallel.parallelize import ParallelModel
    from auroragpt.train.dpo import sequence_logps

    if isinstance(model, ParallelModel):  # it autocasts exactly as the policy's runner does
        values = model.eval_rows(tokens, targets, lambda logits, y: sequence_logps(logits, y)[0], chunks)
        return values.double().cpu() if values is not None else torch.zeros(tokens.shape[0], dtype=torch.float64)
    device = next(model.parameters()).device
    out = []
    for x, y in zip(tokens.chunk(chunks), targets.chunk(chunks)):
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with cast:
            logits = model(x.to(device))
        if isinstance(logits, DTensor):
            logits = logits.full_tensor()
        out.append(sequence_logps(logits, y.to(device))[0].double().cpu())
    return torch.cat(out)


class LiveReference:
    def __init__(self, model, bf16: bool = False) -> None:
        self.model, self.bf16 = model, bf16

    def logps(self, examples: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor, chunks: int) -> torch.Tensor:
        return model_logps(self.model, tokens, targets, chunks, self.bf16)


class PrecomputedReference:
    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.from_numpy(table)  # [examples, 2]: chosen, rejected

    def logps(self, examples: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor, chunks: int) -> torch.Tensor:
        return self.table[examples.long()].reshape(-1)


def pair_batch(plan, examples: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the given pairs, rows chosen/rejected interleaved."""
    from auroragpt.data.examples import decode_rows

    width = plan.seq_len + 1
    rows = [plan.encoded_row(t, m, width) for e in examples for t, m in plan.example_sequences(e)]
    return decode_rows(torch.from_numpy(np.stack(rows)))


def compute_table(model, plan, examples: list[int], layout, mesh, micro_batch: int, bf16: bool = False) -> np.ndarray:
    """Reference log-probs [len(examples), 2] over all data-parallel ranks (each takes a share)."""
    from auroragpt.parallel.layout import data_parallel_coordinates

    dp_rank, dp = (0, 1)
    if dist.is_initialized() and layout.world_size > 1:
        dp_rank, dp = data_parallel_coordinates(layout, mesh)
    table = np.zeros((len(examples), 2), dtype=np.float64)
    step = dp * micro_batch
    for start in range(0, len(examples), step):  # every rank runs the same number of forwards
        mine = list(range(start + dp_rank * micro_batch, min(start + (dp_rank + 1) * micro_batch, len(examples))))
        # always micro_batch pairs: a pipeline stage receives activations of one fixed shape
        chosen = mine + [start] * (micro_batch - len(mine))
        tokens, targets = pair_batch(plan, [examples[i] for i in chosen])
        values = model_logps(model, tokens, targets, 1, bf16).numpy().reshape(-1, 2)
        if mine:
            table[mine] = values[: len(mine)]
    if dist.is_initialized() and layout.world_size > 1:
        total = torch.from_numpy(table)
        dist.all_reduce(total)
        # each data-parallel share is held by its tp ranks (of the last pipeline stage only)
        table = total.numpy() / layout.tp
    return table


def cache_key(cfg, plan) -> str:
    source = Path(reference_source(cfg))
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    stamp = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    record = {"data": plan.data_digest, "reference": stamp, "seq_len": plan.seq_len,
              "precision": cfg.parallel.mixed_precision}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cache_path(cfg, plan, key: str) -> Path:
    if cfg.post.reference_cache:
        return Path(cfg.post.reference_cache)
    return Path(f"{plan.tokens[0].prefix}.reflogps-{key[:16]}.npz")


def load_or_compute_table(cfg, model, plan, layout, mesh, rank: int) -> np.ndarray:
    key = cache_key(cfg, plan)
    path = cache_path(cfg, plan, key)
    mb = cfg.data.micro_batch
    if path.is_file():
        with np.load(path) as saved:
            if str(saved["key"]) != key:
                raise DataError(f"{path}: reference log-prob cache made for other data, tokenizer, template or reference",
                                hint="delete it (or set post.reference_cache elsewhere) to recompute")
            table = saved["logps"]
        check_table(cfg, model, plan, layout, mesh, table, path)
        return table
    table = compute_table(model, plan, list(range(plan.num_examples)), layout, mesh, mb, _autocasts(cfg, layout))
    if rank == 0:
        buf = io.BytesIO()
        np.savez(buf, key=np.array(key), logps=table)
        write_atomically(path, buf.getvalue())
        log.info("reference log-probs of %d pairs cached in %s", plan.num_examples, path)
    if dist.is_initialized():
        dist.barrier()
    return table


def check_table(cfg, model, plan, layout, mesh, table: np.ndarray, path: Path) -> None:
    """Recompute a random check_fraction of the cached pairs; refuse a mismatch."""
    n = plan.num_examples
    count = min(n, max(1, math.ceil(cfg.post.check_fraction * n)))
    picked = sorted(np.random.default_rng(int.from_bytes(os.urandom(4), "little")).choice(n, count, replace=False).tolist())
    if dist.is_initialized():  # every rank checks the same pairs
        shared = torch.tensor(picked, dtype=torch.int64)
        dist.broadcast(shared, src=0)
        picked = shared.tolist()
    fresh = compute_table(model, plan, picked, layout, mesh, cfg.data.micro_batch, _autocasts(cfg, layout))
    if not np.allclose(fresh, table[picked], rtol=1e-4, atol=1e-3):
        worst = int(np.abs(fresh - table[picked]).max(axis=1).argmax())
        raise DataError(f"{path}: stale reference log-prob cache: pair {picked[worst]} holds {table[picked[worst]].tolist()} "
                        f"but the reference model gives {fresh[worst].tolist()}",
                        hint="delete the cache to recompute it (the data, tokenizer, template or reference changed)")
    log.info("reference cache %s: %d of %d pairs recomputed and matched", path, count, n)


def build_reference(cfg, runner, model_cfg, info, plan):
    """LiveReference (frozen model) or PrecomputedReference (checked cache) per post.reference."""
    model = frozen_reference_model(cfg, runner, model_cfg, info)
    if cfg.post.reference == "live":
        return LiveReference(model, _autocasts(cfg, runner.layout))
    table = load_or_compute_table(cfg, model, plan, runner.layout, runner.mesh, info.rank)
    del model
    return PrecomputedReference(table)
