"""`auroragpt train` end to end on one process: the guard stops a diverging run with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "auroragpt.cli", *args]


# Single-process runs whose tests read only their outputs: the tests/conftest.py hook runs them in the
# background from the session's start, on the core the single-process tests leave idle.
EARLY_FILES = {"run.toml": CONFIG}
def _donor(n_layers: int):
    """A model made elsewhere (as `auroragpt import hf` writes one), the same on every call."""
    import torch

    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    model = GPT(get_preset("tiny", n_layers=n_layers, vocab_size=128, max_seq_len=32))
    model.init_weights(torch.Generator().manual_seed(99))
    return model


DONORS = ("import sys\nsys.path.insert(0, %r)\nfrom test_train_loop_cli import _donor\n"
          "from auroragpt.model.io import save_model\n"
          "save_model(_donor(1), 'donor')\nsave_model(_donor(2), 'other')\n") % str(Path(__file__).parent)
LOAD_FROM = ("--checkpoint.load_from=a/checkpoints/step_00000002", "--run.dir=b", "--checkpoint.every=2")
EARLY_COMMANDS = {
    "diverging": _cli("train", "--config", "run.toml", "--run.dir=diverging"),
    "plots": _cli("train", "--config", "run.toml", "--run.dir=diverging", "--plots-only"),
    "synthetic": _cli("train", "--config", "run.toml", "--run.dir=synthetic", "--optim.lr=1e-3", "--train.steps=4",
                      "--data.file_list=not-there.txt", "--checkpoint.every=2"),
    # a run started from another's checkpoint, then restarted (as by --retries) with a longer run
    "a": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", "--run.dir=a",
              "--train.steps=4", "--checkpoint.every=2"),
    "b6": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", *LOAD_FROM,
               "--train.steps=6"),
    "b8": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", *LOAD_FROM,
               "--train.steps=8"),
    # a model folder made elsewhere fine-tuned (weights only), and one of another shape refused
    "donors": [sys.executable, "-c", DONORS],
    "ft": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", "--run.dir=ft",
               "--checkpoint.init_from=donor", "--train.steps=1", "--optim.lr=1e-12", "--optim.min_lr=0",
               "--optim.weight_decay=0"),
    "refused": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100",
                    "--run.dir=ft2", "--checkpoint.init_from=other"),
    # a checkpoint, then the same run folder asked to continue with a bigger vocabulary
    "fit": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", "--run.dir=fit",
                "--train.steps=2"),
    "bigger": _cli("train", "--config", "run.toml", "--optim.lr=1e-3", "--train.max_skipped_in_a_row=100", "--run.dir=fit",
                   "--train.steps=4", "--model.vocab_size=256"),
}


def test_diverging_run_stops_after_k_skipped_steps(early_commands):
    results, folder = early_commands.wait(timeout=300), early_commands.folder
    proc = results["diverging"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "3 steps in a row were skipped" in proc.stderr and "Traceback" not in proc.stderr
    records = [json.loads(line) for line in (folder / "diverging" / "metrics.jsonl").read_text().splitlines()]
    # Every skipped step is recorded, the one that stopped the run included, with the reason.
    skipped = [r for r in records if r.get("skipped")]
    assert [r["skipped_steps"] for r in skipped] == [1, 2, 3] and len(records) < 20
    assert [r["step"] for r in skipped] == list(range(skipped[0]["step"], skipped[0]["step"] + 3))
    assert "3 steps in a row were skipped" in records[-1]["stopped"]
    # The summary of a stopped run says why it stopped.
    plots = results["plots"]
    assert plots.returncode == 0, plots.stderr[-3000:]
    assert "skipped steps: 3" in plots.stdout and "stopped: step" in plots.stdout
    assert (folder / "diverging" / "config.toml").is_file()


def test_unknown_override_is_rejected_by_name(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config), "--optim.lrr=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--optim.lrr=1" in proc.stderr


def test_synthetic_run_ignores_an_absent_file_list_and_checkpoints(early_commands):
    """A config written for real data can be tried on synthetic tokens before the data exists."""
    proc = early_commands.wait(timeout=300)["synthetic"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "topology: 1 rank(s)" in proc.stderr + proc.stdout
    assert (early_commands.folder / "synthetic" / "checkpoints" / "step_00000004").is_dir()


def test_a_run_started_from_load_from_continues_from_its_own_checkpoints(early_commands):
    results = early_commands.wait(timeout=300)
    assert results["a"].returncode == 0, results["a"].stderr[-3000:]
    assert results["b6"].returncode == 0, results["b6"].stderr[-3000:]
    again = results["b8"]  # e.g. restarted by --retries with a longer run
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing from this run's own step_00000006" in again.stderr
    steps = [json.loads(line)["step"] for line in (early_commands.folder / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 4, 5, 6, 7, 8]


def test_init_from_a_model_folder_takes_its_weights_only(early_commands):
    """Fine-tuning a model made elsewhere (`auroragpt import hf` writes such a folder): weights
    copied in, optimizer and step fresh; a folder holding another model shape is refused by field."""
    import torch

    from auroragpt.model.loading import load_inference_model

    results, folder = early_commands.wait(timeout=300), early_commands.folder
    assert results["donors"].returncode == 0, results["donors"].stderr[-3000:]
    result = results["ft"]
    assert result.returncode == 0, result.stderr[-3000:]
    tuned, meta = load_inference_model(folder / "ft")
    assert meta["step"] == 1
    for name, tensor in _donor(1).state_dict().items():
        assert torch.allclose(tuned.state_dict()[name], tensor, atol=1e-9), name  # one step of lr 1e-12
    refused = results["refused"]
    assert refused.returncode == 2 and "n_layers 2 there vs 1 here" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_checkpoint_that_does_not_fit_or_lost_a_shard_is_one_clear_error(early_commands):
    from auroragpt.errors import AuroraError
    from auroragpt.model.loading import load_inference_model

    results, run = early_commands.wait(timeout=300), early_commands.folder / "fit"
    assert results["fit"].returncode == 0, results["fit"].stderr[-3000:]
    bigger = results["bigger"]
    assert bigger.returncode == 2 and "Traceback" not in bigger.stderr, bigger.stderr[-3000:]
    assert "could not be loaded into this model: " in bigger.stderr and "Size mismatch" in bigger.stderr
    for shard in (run / "checkpoints" / "step_00000002").glob("*.distcp"):
        shard.unlink()
    with pytest.raises(AuroraError, match=r"cannot be used: .*__0_0\.distcp is missing"):
        load_inference_model(run)
    served = subprocess.run([sys.executable, "-m", "auroragpt.cli", "serve", str(run), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 2 and "Traceback" not in served.stderr and "is missing" in served.stderr


def test_an_impossible_layout_is_refused_once_before_any_process_group(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AURORAGPT_DIST_TIMEOUT": "600"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "auroragpt.cli", "train", "--config", str(config), f"--run.dir={tmp_path / 'r'}",
                           "--parallel.tp=3"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("auroragpt train: error:") == 1, proc.stderr[-3000:]
    assert "tp=3" in proc.stderr or "tp = 3" in proc.stderr or "tp (3)" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "r").exists()
