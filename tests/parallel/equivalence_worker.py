"""One rank of a parallel-equivalence run: train a tiny GPT 5 steps under several layouts.

Started N times by test_parallel_equivalence.py with RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT set (gloo). Rank 0 writes {mode: {"loss": [...], "norm": [...]}} as JSON.
`reference()` is the single-process plain-PyTorch loop the modes are compared against.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys

import torch
import torch.nn.functional as F

from auroragpt.model.gpt import GPT
from auroragpt.model.presets import ModelConfig

CFG = ModelConfig(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=256, max_seq_len=64)
STEPS, GLOBAL_BATCH, SEQ, LR, CLIP = 5, 8, 16, 1e-2, 0.5

# mode name -> (world size, layout fields, micro batch per data-parallel rank, parallelize options)
MODES: dict[str, tuple[int, dict, int, dict]] = {
    "ddp": (2, {"dp_replicate": 2, "dp_shard": 1}, 2, {}),
    "fsdp": (2, {"dp_shard": 2}, 2, {}),
    "fsdp_activation_checkpoint": (2, {"dp_shard": 2}, 4, {"activation_checkpoint": "full"}),
    "fsdp_selective_checkpoint": (2, {"dp_shard": 2}, 4, {"activation_checkpoint": "selective"}),
    "fsdp_bf16": (2, {"dp_shard": 2}, 4, {"mixed_precision": True}),
    "tp": (2, {"tp": 2, "dp_shard": 1}, 8, {}),
    "tp_bf16_autocast": (2, {"tp": 2, "dp_shard": 1}, 8, {"mixed_precision": True}),
    "ddp_bf16_autocast": (2, {"dp_replicate": 2, "dp_shard": 1}, 4, {"mixed_precision": True}),
    "tp_loss_parallel_no_sp": (2, {"tp": 2, "dp_shard": 1, "sequence_parallel": False, "loss_parallel": True}, 8, {}),
    "tp_tied_embeddings": (2, {"tp": 2, "dp_shard": 1}, 8, {"tie_embeddings": True}),
    "fsdp_tied_embeddings": (2, {"dp_shard": 2}, 4, {"tie_embeddings": True}),
    "fsdp_meta_init": (2, {"dp_shard": 2}, 4, {"meta_init": True}),
    "tp_meta_init": (2, {"tp": 2, "dp_shard": 1}, 8, {"meta_init": True}),
    "pp_bf16_autocast": (2, {"pp": 2, "dp_shard": 1, "pp_microbatches": 2}, 8, {"mixed_precision": True}),
    "pp_1f1b": (2, {"pp": 2, "dp_shard": 1, "pp_microbatches": 2}, 4, {}),
    "fsdp2_tp2": (4, {"dp_shard": 2, "tp": 2}, 2, {}),
    "hsdp2x2": (4, {"dp_replicate": 2, "dp_shard": 2}, 2, {}),
    "pp2_replicate2": (4, {"pp": 2, "dp_replicate": 2, "dp_shard": 1, "pp_microbatches": 2}, 2, {}),
    "tp2_replicate2": (4, {"tp": 2, "dp_replicate": 2, "dp_shard": 1}, 2, {}),
    "pp2_tp2": (4, {"pp": 2, "tp": 2, "dp_shard": 1, "pp_schedule": "GPipe", "pp_microbatches": 4}, 8, {}),
    # 3-D layouts (8 ranks): pipeline x tensor x sharded data, and hybrid-sharded data x tensor
    "pp2_tp2_fsdp2": (8, {"pp": 2, "tp": 2, "dp_shard": 2, "pp_microbatches": 2}, 2, {}),
    "hsdp2x2_tp2": (8, {"dp_replicate": 2, "dp_shard": 2, "tp": 2}, 2, {}),
    "pp2_fsdp2_interleaved": (
        4,
        {"pp": 2, "dp_shard": 2, "pp_schedule": "Interleaved1F1B", "pp_virtual_stages": 2, "pp_microbatches": 2},
        4,
        {},
    ),
}

def make_model(cfg: ModelConfig) -> GPT:
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def make_data() -> torch.Tensor:
    """Learnable sequences (t -> 5t + 7 mod vocab from a random start), so the loss moves."""
    start = torch.randint(0, CFG.vocab_size, (STEPS, GLOBAL_BATCH, 1), generator=torch.Generator().manual_seed(1234))
    steps = torch.arange(SEQ + 1)
    return (start * 5 ** steps + 7 * ((5 ** steps - 1) // 4)) % CFG.vocab_size


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1))


def config_for(options: dict) -> ModelConfig:
    """The test model, with tied embeddings when a mode asks for them."""
    return dataclasses.replace(CFG, tie_embeddings=bool(options.get("tie_embeddings", False)))


@functools.lru_cache(maxsize=None)
def reference(tie_embeddings: bool = False) -> dict[str, list[float]]:
    """Plain single-process PyTorch: whole batch, AdamW, clip_grad_norm_ (computed once per process;
    callers only read it)."""
    torch.manual_seed(0)
    model = make_model(config_for({"tie_embeddings": tie_embeddings}))
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    out = {"loss": [], "norm": []}
    for batch in make_data():
        loss = loss_fn(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad()
        out["loss"].append(loss.item())
        out["norm"].append(norm.item())
    with torch.no_grad():
        first = make_data()[0]
        out["eval"] = [loss_fn(model.eval()(first[:, :-1]), first[:, 1:]).item()]
    return out


def run_mode(mode: str) -> dict[str, list[float]]:
    from auroragpt.parallel.layout import ParallelLayout, build_mesh, data_parallel_coordinates, grad_accum_steps, validate
    from auroragpt.parallel.parallelize import parallelize

    _, fields, micro, options = MODES[mode]
    cfg = config_for(options)
    meta_init = options.get("meta_init", False)
    options = {k: v for k, v in options.items() if k not in ("tie_embeddings", "meta_init")}
    layout = validate(ParallelLayout(**fields), torch.distributed.get_world_size(), cfg, GLOBAL_BATCH, micro)
    mesh = build_mesh(layout, "cpu")
    torch.manual_seed(0)
    if meta_init:  # the big-model path: no full copy of the weights on any rank
        with torch.device("meta"):
            model = GPT(cfg)
        pm = parallelize(model, layout, mesh, device="cpu", **options)
        pm.init_weights(seed=0)
        full = dict(pm.named_parameters())["layers.0.attention.wq.weight"]
        full = full.full_tensor() if hasattr(full, "full_tensor") else full
        half = full.shape[0] // 2
        meta_shards_differ = not torch.equal(full[:half], full[half:])
    else:
        pm = parallelize(make_model(cfg), layout, mesh, **options)
    opt = torch.optim.AdamW(pm.parameters(), lr=LR)
    dp_rank, dp_size = data_parallel_coordinates(layout, mesh)
    rows = GLOBAL_BATCH // dp_size
    accum = grad_accum_steps(layout, GLOBAL_BATCH, micro)
    out = {"loss": [], "norm": []}
    if meta_init:
        out["shards_differ"] = meta_shards_differ
    for batch in make_data():
        mine = batch[dp_rank * rows:(dp_rank + 1) * rows]
        loss = pm.train_step(mine[:, :-1], mine[:, 1:], loss_fn, grad_accum=accum)
        norm = pm.clip_grad_norm_(CLIP)
        opt.step()
        opt.zero_grad()
        out["loss"].append(loss.item())
        out["norm"].append(norm.item())
    first = make_data()[0][dp_rank * rows:(dp_rank + 1) * rows]
    out["eval"] = [pm.eval().eval_loss(first[:, :-1], first[:, 1:], loss_fn).item()]
    return out


def main() -> int:
    modes, out_path = sys.argv[1].split(","), sys.argv[2]
    torch.distributed.init_process_group("gloo", init_method=os.environ.get("EQUIVALENCE_INIT", "env://"),
                                         rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    results = {}
    for mode in modes:
        try:
            results[mode] = run_mode(mode)
        except Exception as err:  # reported to the test, which fails with it
            results[mode] = {"error": f"{type(err).__name__}: {err}"}
            print(f"rank {os.environ['RANK']} mode {mode}: {type(err).__name__}: {err}", file=sys.stderr)
            raise
    if torch.distributed.get_rank() == 0:
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f)
        os.replace(tmp, out_path)
    from auroragpt.runtime.setup import teardown

    teardown()  # collects the models' reference cycles first, so exit cannot abort in gloo's threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
