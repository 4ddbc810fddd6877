"""`auroragpt train` end to end on one process: the guard stops a diverging run with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CONFIG = """
[model]
preset = "tiny"
n_layers = 1
vocab_size = 128

[data]
synthetic = true
seq_len = 32
micro_batch = 4
global_batch = 4

[train]
steps = 20
grad_clip = 0.0
max_skipped_in_a_row = 3

[optim]
lr = 1e4
warmup_steps = 0

[metrics]
plots = false
"""


def test_diverging_run_stops_after_k_skipped_steps(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config),
                           f"--run.dir={tmp_path / 'run'}"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "3 steps in a row were skipped" in proc.stderr and "Traceback" not in proc.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] == 2 and len(records) < 20
    assert (tmp_path / "run" / "config.toml").is_file()


def test_unknown_override_is_rejected_by_name(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config), "--optim.lrr=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--optim.lrr=1" in proc.stderr


def test_synthetic_run_ignores_an_absent_file_list_and_checkpoints(tmp_path):
    """A config written for real data can be tried on synthetic tokens before the data exists."""
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config),
                           f"--run.dir={tmp_path / 'run'}", "--optim.lr=1e-3", "--train.steps=4",
                           f"--data.file_list={tmp_path / 'not-there.txt'}", "--checkpoint.every=2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "topology: 1 rank(s)" in proc.stderr + proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_00000004").is_dir()
