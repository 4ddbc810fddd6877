"""One rank of a real gloo job that does what a dry run simulates: build, parallelize, one step
with its collectives recorded; writes what it holds and sent to OUT/rank-R.json."""

import json
import sys
from pathlib import Path

import torch

from auroragpt.config import load_config
from auroragpt.parallel.layout import build_mesh, grad_accum_steps
from auroragpt.parallel.parallelize import parallelize
from auroragpt.runtime.collectives import summarize
from auroragpt.runtime.setup import setup, teardown
from auroragpt.train.dryrun import measure_rank, one_step
from auroragpt.train.optim import build_optimizer
from auroragpt.train.trainer import build_model, check_layout, resolve_model_config


def main() -> None:
    config, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(config, sys.argv[3:])
    info = setup(seed=0)
    model_cfg = resolve_model_config(cfg)
    layout = check_layout(cfg, model_cfg, info.world_size)
    mesh = build_mesh(layout, "cpu")
    model = build_model(model_cfg, torch.device("cpu"), 0)
    runner = parallelize(model, layout, mesh, mixed_precision=cfg.parallel.mixed_precision == "bf16",
                         activation_checkpoint="none", compile=False, device="cpu")
    optimizers = [build_optimizer(part, cfg.optim) for part in runner.model_parts]
    accum = grad_accum_steps(layout, cfg.data.global_batch, cfg.data.micro_batch)
    calls = one_step(cfg, runner, optimizers, accum, "cpu") if layout.pp == 1 else []
    if layout.pp > 1:  # the pipeline schedule needs real tokens; memory is what this layout checks
        tokens = torch.randint(0, model_cfg.vocab_size, (accum * cfg.data.micro_batch, cfg.data.seq_len))
        from auroragpt.train.trainer import cross_entropy

        runner.train_step(tokens, tokens, cross_entropy, grad_accum=accum)
        for optimizer in optimizers:
            optimizer.step()
    record = {**measure_rank(runner, optimizers),
              "collectives": sorted([list(key) + [count] for key, count in summarize(calls).items()])}
    (out / f"rank-{info.rank}.json").write_text(json.dumps(record))
    teardown()


if __name__ == "__main__":
    main()
