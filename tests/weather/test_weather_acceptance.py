"""Acceptance on the simulator's data, through the user's commands: a trained weather-tiny (CPU
sized) 8-member ensemble beats persistence in ensemble-mean RMSE at the first lead times, with a
spread-skill ratio in [0.5, 2]. About a minute of CPU time (300 steps on a 16x32 grid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "auroragpt.cli", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.timeout(900)  # ~1 min of CPU; much longer in wall time on a shared machine
def test_trained_tiny_ensemble_beats_persistence_and_is_calibrated(tmp_path):
    cli("weather", "simulate", "--out", "sim.zarr", "--grid", "16x32", "--days", "150", cwd=tmp_path)
    cli("train", "--config", str(REPO / "configs" / "weather-demo.toml"), "--model.dim=48", "--model.n_heads=4",
        "--model.ffn_dim=128", "--train.steps=300", "--metrics.plots=false", "--checkpoint.every=0", cwd=tmp_path)
    inits = "2000-05-10T12,2000-05-14T06,2000-05-18T00,2000-05-21T18"
    cli("weather", "forecast", "runs/weather-demo", "--init", inits, "--lead-steps", "2", "--members", "8",
        "--out", "fc.zarr", cwd=tmp_path)
    cli("weather", "score", "fc.zarr", "--truth", "sim.zarr", "--output", "score.json", cwd=tmp_path)
    table = json.loads((tmp_path / "score.json").read_text())
    for name, s in table["variables"].items():
        for lead in (0, 1):
            assert s["rmse"][lead] < 0.8 * s["persistence_rmse"][lead], (name, lead, s)
        assert 0.5 <= s["spread_skill"][0] <= 2.0, (name, s["spread_skill"])
