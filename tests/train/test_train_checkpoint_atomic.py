"""A kill at any moment of a save leaves only complete checkpoints under their final names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from auroragpt.model.loading import load_inference_model
from auroragpt.train.checkpoint import (
    CheckpointError,
    Checkpointer,
    latest_checkpoint,
    list_checkpoints,
    remove_incomplete,
)

SAVER = """
import sys, torch
from auroragpt.model.gpt import GPT
from auroragpt.model.presets import get_preset
from auroragpt.train.checkpoint import Checkpointer
cfg = get_preset("tiny", n_layers=2)
model = GPT(cfg)
model.init_weights(torch.Generator().manual_seed(0))
opt = torch.optim.AdamW(model.parameters())
ckpt = Checkpointer(sys.argv[1], keep_last=2)
for step in range(1, 100000):
    with torch.no_grad():
        model.norm.weight.fill_(step)  # lets the test check that weights and meta agree
    ckpt.save(step, [model], [opt], {"model_config": cfg.to_dict(), "tokens_seen": step})
"""


@pytest.mark.parametrize("delay", [0.05, 0.23, 0.41])
def test_sigkill_during_saves_leaves_loadable_checkpoints(tmp_path, delay):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while latest_checkpoint(run) is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    complete = list_checkpoints(run)
    assert complete and len(complete) <= 3  # keep_last = 2, plus one whose old copy was being deleted
    for path in complete:
        model, meta = load_inference_model(path)
        assert meta["step"] == int(path.name.split("_")[1])
        assert torch.all(model.norm.weight == meta["step"])
    remove_incomplete(run)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if ".tmp" in p.name or ".trash" in p.name]
    assert leftovers == []


def test_incomplete_directories_are_never_picked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000007.tmp").mkdir(parents=True)
    (run / "checkpoints" / "step_00000009").mkdir()  # no meta.json: not a checkpoint
    assert latest_checkpoint(run) is None
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_inference_model(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_inference_model(tmp_path / "nowhere")


def test_keep_last_and_load_into_training_state(tmp_path):
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    cfg = get_preset("tiny", n_layers=1, vocab_size=64, dim=32, n_heads=2, n_kv_heads=1, ffn_dim=64)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        ckpt.save(step, [model], [opt], {"model_config": cfg.to_dict()})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    fresh = GPT(cfg)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    meta = ckpt.load(latest_checkpoint(tmp_path), [fresh], [fresh_opt])
    assert meta["step"] == 3
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    state_a = opt.state_dict()["state"]
    state_b = fresh_opt.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg"], state_b[k]["exp_avg"]) for k in state_a)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_async_save_finishes_on_wait(tmp_path):
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    cfg = get_preset("tiny", n_layers=1, vocab_size=64, dim=32, n_heads=2, n_kv_heads=1, ffn_dim=64)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters())
    ckpt = Checkpointer(tmp_path, keep_last=1, async_save=True)
    ckpt.save(1, [model], [opt], {"model_config": cfg.to_dict()})
    ckpt.save(2, [model], [opt], {"model_config": cfg.to_dict()})  # waits for step 1 first
    saved = model.tok_embeddings.weight.detach().clone()
    with torch.no_grad():
        model.tok_embeddings.weight.add_(1.0)  # training goes on while the save is in flight
    ckpt.wait()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002"]
    loaded, meta = load_inference_model(tmp_path)
    assert meta["step"] == 2 and torch.equal(loaded.tok_embeddings.weight, saved)
