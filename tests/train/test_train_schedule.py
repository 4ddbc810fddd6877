"""Learning-rate schedule values and weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from auroragpt.config import OptimSection
from auroragpt.train.optim import build_optimizer, lr_at, parameter_groups


def test_warmup_then_cosine_to_min():
    cfg = OptimSection(lr=1.0, min_lr=0.1, warmup_steps=10, decay="cosine")
    assert lr_at(0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(10, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)
    assert lr_at(500, cfg, 110) == pytest.approx(0.1)
    values = [lr_at(s, cfg, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_and_constant_and_decay_steps():
    lin = OptimSection(lr=2.0, min_lr=0.0, warmup_steps=0, decay="linear", decay_steps=100)
    assert lr_at(0, lin, 1000) == pytest.approx(2.0)
    assert lr_at(25, lin, 1000) == pytest.approx(1.5)
    assert lr_at(100, lin, 1000) == pytest.approx(0.0)
    const = OptimSection(lr=0.5, warmup_steps=4, decay="constant")
    assert [lr_at(s, const, 10) for s in (0, 3, 9)] == pytest.approx([0.125, 0.5, 0.5])
    assert math.isfinite(lr_at(0, OptimSection(warmup_steps=0), 0))


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = parameter_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[1].weight)}
    opt = build_optimizer(model, OptimSection(beta1=0.8, beta2=0.9))
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
