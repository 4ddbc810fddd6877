"""A test-made ERA5-like zarr trains (FSDP2 and DDP on 2 real gloo ranks), survives SIGKILL with
identical losses on resume, forecasts an ensemble in WeatherBench2's layout reproducibly, and
scores, all through the user's commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model.dim=32", "--model.n_layers=2", "--model.n_heads=2", "--model.ffn_dim=64",
        "--data.micro_batch=2", "--data.global_batch=4", "--train.steps=8", "--checkpoint.every=4",
        "--metrics.log_every=1", "--metrics.plots=false", "--weather.variables=geopotential500,temperature850,2m_temperature"]


def launch(run_dir: Path, data: Path, nproc: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "auroragpt.cli", "train", "--config", str(REPO / "configs" / "weather-demo.toml"),
           f"--run.dir={run_dir}", f"--data.path={data}", *TINY, *extra]
    log = open(run_dir.parent / f"{run_dir.name}.log", "ab")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, run_dir: Path, timeout: float = 240) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        rc = "timeout"
    assert rc == 0, f"training exited with {rc}:\n{(run_dir.parent / f'{run_dir.name}.log').read_text()[-4000:]}"


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auroragpt.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def _two_at_a_time(commands: list[tuple[str, ...]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Independent single-process CLI runs, two at a time (one per core); results in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: cli(*args, cwd=cwd), commands))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, era5_zarr):
    root = tmp_path_factory.mktemp("weather_runs")
    straight, killed = root / "straight", root / "killed"
    for d in (straight, killed):
        d.mkdir()
    first = launch(straight, era5_zarr, 2)
    second = launch(killed, era5_zarr, 2)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "step_00000004").exists():
        assert second.poll() is None, (root / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.01)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=30)
    saved = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert "step_00000008" not in saved, "the run finished before the kill"
    finish(first, straight)
    finish(launch(killed, era5_zarr, 2), killed)
    return {"root": root, "straight": straight, "killed": killed, "data": era5_zarr}


def test_sigkill_and_resume_give_identical_losses(runs):
    a, b = losses(runs["straight"]), losses(runs["killed"])
    assert sorted(a) == list(range(1, 9)) and sorted(b) == list(range(1, 9))
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]
    assert "dp_shard=2 tp=1 (fsdp)" in (runs["root"] / "straight.log").read_text()


def test_ddp_matches_fsdp2(runs):
    ddp = runs["root"] / "ddp"
    ddp.mkdir()
    finish(launch(ddp, runs["data"], 2, "--parallel.dp_replicate=2", "--parallel.dp_shard=1", "--train.steps=3"), ddp)
    assert "dp_replicate=2 dp_shard=1 tp=1 (ddp)" in (runs["root"] / "ddp.log").read_text()
    a, d = losses(runs["straight"]), losses(ddp)
    for step in (1, 2, 3):
        assert d[step] == pytest.approx(a[step], rel=1e-4), step


def test_forecast_is_reproducible_in_weatherbench2_layout_and_scores(runs, tmp_path):
    import numpy as np
    import xarray as xr

    common = ["weather", "forecast", str(runs["straight"]), "--init", "2020-01-09T00,2020-01-10T06", "--lead-steps", "3",
              "--members", "3", "--sampling-steps", "2", "--data", str(runs["data"])]
    forecasts = [("--out", "a.zarr", "--seed", "5"), ("--out", "b.zarr", "--seed", "5"), ("--out", "c.zarr", "--seed", "6"),
                 ("--out", "d.zarr", "--seed", "5", "--members", "1")]
    for r in _two_at_a_time([(*common, *args) for args in forecasts], tmp_path):
        assert r.returncode == 0, r.stderr
    a, b, c = (xr.open_zarr(tmp_path / n) for n in ("a.zarr", "b.zarr", "c.zarr"))
    assert set(a.data_vars) == {"geopotential500", "temperature850", "2m_temperature"}
    assert a["geopotential500"].dims == ("init_time", "member", "lead_time", "latitude", "longitude")
    assert "valid_time" in a.coords and a.sizes["member"] == 3 and a.sizes["lead_time"] == 3
    assert a["valid_time"].values[1, 0] == np.datetime64("2020-01-10T12", "ns")
    np.testing.assert_array_equal(a["temperature850"].values, b["temperature850"].values)
    assert not np.array_equal(a["temperature850"].values, c["temperature850"].values)
    # members differ from one another, and member 0 does not depend on the ensemble size
    assert np.abs(a["temperature850"].values[:, 0] - a["temperature850"].values[:, 1]).max() > 0
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "d.zarr")["temperature850"].values[:, 0],
                                  a["temperature850"].values[:, 0])

    r = cli("weather", "score", "a.zarr", "--truth", str(runs["data"]), "--output", "score.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "score.json").read_text())
    s = table["variables"]["geopotential500"]
    assert len(s["rmse"]) == 3 and len(s["persistence_rmse"]) == 3 and len(s["crps"]) == 3
    assert len(table["track"]["member_error_km"]) == 3
    for png in ("score_vs_lead.png", "score_maps.png", "score_spectra.png", "score_rank_histogram.png", "score_tracks.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_bad_inputs_are_one_paragraph_errors(runs, tmp_path):
    time_, missing, grid = _two_at_a_time([
        ("weather", "forecast", str(runs["straight"]), "--init", "1999-01-01T00", "--data", str(runs["data"])),
        ("train", "--config", str(REPO / "configs" / "weather-demo.toml"), f"--run.dir={tmp_path / 'x'}",
         f"--data.path={tmp_path / 'missing.zarr'}"),
        ("weather", "simulate", "--grid", "33x64", "--out", "x.zarr")], tmp_path)
    r = time_
    assert r.returncode == 2 and "is not a time of the dataset" in r.stderr and "Traceback" not in r.stderr
    r = missing
    assert r.returncode == 2 and "does not exist" in r.stderr and "weather simulate" in r.stderr
    r = grid
    assert r.returncode == 2 and "--grid" in r.stderr
    assert not (tmp_path / "fc.zarr").exists()
