"""Per-block torch.compile (with selective activation checkpointing, as the shipped configs) trains like eager."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "equivalence_worker.py"


def _load_worker():
    spec = importlib.util.spec_from_file_location("parallel_compile_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_checkpointed_blocks_match_eager() -> None:
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile's CPU backend (inductor) needs a C compiler, and none is installed")
    import torch
    from torch._dynamo.utils import counters

    from auroragpt.parallel.layout import ParallelLayout, validate
    from auroragpt.parallel.parallelize import parallelize

    w = _load_worker()
    layout = validate(ParallelLayout(), 1, w.CFG, w.GLOBAL_BATCH, w.GLOBAL_BATCH)
    model = w.make_model(w.CFG)
    names = [n for n, _ in model.named_parameters()]
    counters.clear()
    pm = parallelize(model, layout, None, compile=True, activation_checkpoint="selective")
    assert [n for n, _ in pm.named_parameters()] == names, "compile/checkpointing must keep parameter names"
    opt = torch.optim.AdamW(pm.parameters(), lr=w.LR)
    losses = []
    for batch in w.make_data():
        losses.append(pm.train_step(batch[:, :-1], batch[:, 1:], w.loss_fn).item())
        pm.clip_grad_norm_(w.CLIP)
        opt.step()
        opt.zero_grad()
    assert counters["stats"]["unique_graphs"] >= 1, "no block was compiled"
    assert losses == pytest.approx(w.reference()["loss"], rel=1e-3)
