"""`auroragpt train --dry-run`: the shipped configs checked at their real sizes in seconds, and the
simulation checked against real gloo ranks (memory per rank exactly, the collectives of a step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auroragpt.config import load_config
from auroragpt.runtime.collectives import summarize
from auroragpt.train.dryrun import dry_run

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dryrun_worker.py")
TINY = """
[model]
preset = "tiny"
vocab_size = 128
tie_embeddings = false
[parallel]
dp_shard = -1
mixed_precision = "bf16"
[data]
synthetic = true
seq_len = 32
micro_batch = 4
global_batch = 16
[train]
steps = 1
[metrics]
plots = false
"""


SHIPPED = [
    ("auroragpt-7b.toml", 768, 12, ["6.74B parameters on 768 ranks (64 nodes x 12)", "(hsdp)"]),
    ("auroragpt-2b.toml", 128, 4, ["on 128 ranks (32 nodes x 4)"]),
    ("auroragpt-70b.toml", 120_960, 12, ["on 120,960 ranks (10,080 nodes x 12)", "pp=8", "tp=4",
                                         "pipeline stage(s) [7]", "send"]),
]
TOO_BIG = ("--config", str(REPO / "configs/auroragpt-70b.toml"), "--world-size", "12", "--ranks-per-node", "12",
           "--parallel.dp_replicate=1", "--parallel.pp=1", "--parallel.tp=1", "--data.global_batch=12",
           "--data.micro_batch=1")


def _shipped_args(config: str, world: int, per_node: int) -> tuple[str, ...]:
    device = "A100" if per_node == 4 else "Max 1550"
    return ("--config", str(REPO / "configs" / config), "--world-size", str(world), "--ranks-per-node", str(per_node),
            "--device", device)


DRY_RUNS = [_shipped_args(*case[:3]) for case in SHIPPED] + [TOO_BIG]
# Each dry run is one single-threaded process (~8 s): the tests/conftest.py hook runs them in the
# background from the session's start, on the core the single-process tests leave idle.
EARLY_COMMANDS = {" ".join(args): [sys.executable, "-m", "auroragpt.cli", "train", "--dry-run", *args] for args in DRY_RUNS}


@pytest.fixture(scope="module")
def dry_runs(early_commands) -> dict[tuple[str, ...], tuple[str, float]]:
    """Every dry run of this file's CLI tests: its output and its own seconds."""
    results = early_commands.wait(timeout=600)
    for result in results.values():
        assert result.returncode == 0, result.stderr[-3000:]
    return {args: (results[" ".join(args)].stdout, early_commands.seconds[" ".join(args)]) for args in DRY_RUNS}


@pytest.mark.parametrize(("config", "world", "per_node", "expect"), SHIPPED)
def test_shipped_configs_at_full_size(dry_runs, config: str, world: int, per_node: int, expect: list[str]) -> None:
    device = "A100" if per_node == 4 else "Max 1550"
    out, seconds = dry_runs[_shipped_args(config, world, per_node)]
    assert seconds < 60, f"the dry run of {config} took {seconds:.0f} s"
    for text in expect + ["parameters", "optimizer", "activations per micro batch", "collectives of one step",
                          "step time", f"verdict on {device}: fits"]:
        assert text in out, out


def test_a_layout_that_does_not_fit_says_so(dry_runs) -> None:
    out, _ = dry_runs[TOO_BIG]
    assert "verdict on Max 1550: does NOT fit" in out  # 70B x 16 bytes / 12 = 93 GB per tile


def test_bad_dry_run_arguments_are_explained() -> None:
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(REPO / "configs/auroragpt-7b.toml"),
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--world-size" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "train", "--config", str(REPO / "configs/auroragpt-7b.toml"),
                           "--dry-run", "--world-size", "700"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "700" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("world", "overrides", "compare_collectives"), [
    (2, [], True),                                                                   # FSDP2
    pytest.param(4, ["--parallel.pp=2", "--parallel.pp_microbatches=2"], False,  # PP x FSDP2 (memory only: 11 s)
                 marks=pytest.mark.slow),
    (4, ["--parallel.tp=2"], True),                                                  # FSDP2 x TP
    pytest.param(8, ["--parallel.dp_replicate=2", "--parallel.dp_shard=2", "--parallel.tp=2"], True,  # HSDP x TP
                 marks=pytest.mark.slow),  # 8 ranks on 2 cores: 25 s; 2 and 4 ranks cover FSDP2 and TP in CI
])
def test_prediction_equals_a_real_step(tmp_path: Path, world: int, overrides: list[str], compare_collectives: bool) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", str(world), "--launcher", "torchrun",
                           "--", sys.executable, str(WORKER), str(config), str(tmp_path), *overrides],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Two ranks per job (the first and the last) keep the test short; each is checked exactly.
    predicted = dry_run(load_config(config, overrides), world, ranks=[0, world - 1], workers=2)["ranks"]
    for state in predicted:
        real = json.loads((tmp_path / f"rank-{state.rank}.json").read_text())
        for key in ("param_count", "param_bytes", "grad_bytes", "optimizer_bytes"):
            assert getattr(state, key) == real[key], (state.rank, key)
        if compare_collectives:
            mine = sorted([list(key) + [count] for key, count in summarize(state.collectives).items()])
            extra = [c for c in mine if c not in real["collectives"]]
            missing = [c for c in real["collectives"] if c not in mine]
            assert not extra and not missing, (state.rank, extra, missing)
