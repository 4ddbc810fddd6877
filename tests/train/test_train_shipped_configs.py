"""The shipped configs load, and their layouts fit the machines they are written for."""

from __future__ import annotations

from pathlib import Path

import pytest

from auroragpt.config import load_config, total_steps
from auroragpt.parallel.layout import ParallelLayout, grad_accum_steps, validate
from auroragpt.train.trainer import resolve_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name, world, accum, params_b", [
    ("auroragpt-7b.toml", 768, 2, 6.7),
    ("auroragpt-2b.toml", 128, 2, 2.1),
])
def test_large_configs_fit_their_machines(name, world, accum, params_b):
    cfg = load_config(CONFIGS / name)
    model_cfg = resolve_model_config(cfg)
    fields = set(ParallelLayout.__dataclass_fields__)
    raw = {k: v for k, v in vars(cfg.parallel).items() if k in fields}
    layout = validate(ParallelLayout(**raw), world, model_cfg, cfg.data.global_batch, cfg.data.micro_batch)
    assert grad_accum_steps(layout, cfg.data.global_batch, cfg.data.micro_batch) == accum
    assert model_cfg.num_params() / 1e9 == pytest.approx(params_b, abs=0.1)
    assert model_cfg.max_seq_len == cfg.data.seq_len == 4096
    assert total_steps(cfg) > 100_000


def test_demo_config_loads():
    cfg = load_config(CONFIGS / "demo.toml")
    assert cfg.model.preset == "tiny" and cfg.data.file_list.endswith("file_list.txt")
    assert total_steps(cfg) * cfg.data.global_batch * cfg.data.seq_len < 2_000_000  # minutes on 2 CPU cores
