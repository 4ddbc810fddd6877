"""SWiPe window (+ sequence) parallelism equals the 1-rank weather model, forward and gradients, fp32.

Real processes on gloo: a 2-rank and a 4-rank group started together, each running its layouts one
after the other. Each layout is checked on an unshifted block, a shifted block and a whole
4-block denoiser (which alternates them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auroragpt.errors import ConfigError
from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window_comm import WindowGroup, halo_roll
from auroragpt.parallel.window_layout import WindowLayout
from auroragpt.weather import windows as win

WORKER = Path(__file__).resolve().parent / "swipe_worker.py"
# world size -> layouts "wp_h x wp_w x sp"
GROUPS = {2: ["1x2x1", "2x1x1", "1x1x2"], 4: ["2x2x1", "1x4x1", "4x1x1", "1x2x2", "2x1x2", "pp2:1x2x1", "pp2:2x1x1", "fsdp2:1x2x1"],
          8: ["pp2:1x2x2", "pp2:2x2x1"]}
PLAIN = [lay for layouts in GROUPS.values() for lay in layouts if "x" in lay and ":" not in lay]
PIPELINE = [lay for layouts in GROUPS.values() for lay in layouts if lay.startswith("pp")]
TOL = 1e-5
PIECES = ("block_unshifted", "block_shifted", "model")


def _start(world: int, layouts: list[str], out: Path) -> list[subprocess.Popen]:
    rendezvous = out.with_suffix(".rendezvous")
    rendezvous.unlink(missing_ok=True)
    return [subprocess.Popen([sys.executable, str(WORKER), ",".join(layouts), str(out)],
                             env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), SWIPE_INIT=f"file://{rendezvous}",
                                      OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]


def _finish(procs: list[subprocess.Popen], timeout: float) -> str:
    logs = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            output = proc.communicate(timeout=10)[0] + "\n[killed after timeout]"
        logs.append(f"--- rank exit {proc.returncode}\n{output[-3000:]}")
    return "\n".join(logs)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("swipe")
    started = {w: (_start(w, layouts, tmp / f"world{w}.json"), tmp / f"world{w}.json") for w, layouts in GROUPS.items()}
    merged: dict = {}
    for world, (procs, out) in started.items():
        log = _finish(procs, timeout=300)
        assert out.exists(), f"world {world} wrote no results:\n{log}"
        merged.update(json.loads(out.read_text()))
    return merged


@pytest.mark.parametrize("layout", PLAIN)
@pytest.mark.parametrize("piece", PIECES)
def test_swipe_matches_one_rank(results: dict, layout: str, piece: str) -> None:
    r = results[f"{layout}/{piece}"]
    for key in ("out", "xgrad", "pgrad"):
        assert r[key] <= TOL * r["scale"][key], f"{layout} {piece}: {key} differs by {r[key]:.3g} (scale {r['scale'][key]:.3g})"


@pytest.mark.parametrize("layout", PLAIN)
def test_swipe_shift_is_one_message_round_per_neighbour(results: dict, layout: str) -> None:
    """A shifted block exchanges quadrants once forward (shift + unshift) and once backward; an
    unshifted one only talks inside the sp group; one message per distinct neighbour per call."""
    wp_h, wp_w, sp = (int(v) for v in layout.split("x"))
    unshifted = results[f"{layout}/block_unshifted"]["ledger"]
    assert not any(k.startswith("wp.") for k in unshifted)
    shifted = results[f"{layout}/block_shifted"]["ledger"]
    def neighbours(rows: int, cols: int) -> int:
        return len({(a % rows, b % cols) for a in (0, 1) for b in (0, 1)} - {(0, 0)})

    # the shift moves the sp ranks' column strips, the unshift whole tiles
    for kind, count in (("wp.shift", neighbours(wp_h, wp_w * sp)), ("wp.unshift", neighbours(wp_h, wp_w))):
        for suffix in ("", ".grad"):
            assert shifted[kind + suffix]["calls"] == 1
            assert shifted[kind + suffix]["messages"] == count
    if sp > 1:
        assert shifted["sp.all_to_all"]["calls"] == 2 and shifted["sp.all_to_all.grad"]["calls"] == 2
    else:
        assert "sp.all_to_all" not in shifted


def test_single_tile_roll_is_torch_roll() -> None:
    """With one tile every quadrant is local: the exchange is exactly the model's shift/unshift."""
    layout = WindowLayout(grid_h=16, grid_w=24, window_h=4, window_w=6, n_heads=2)
    group = WindowGroup(layout=layout, rank=0, ledger=CommLedger())
    x = torch.randn(2, 16, 24, 3)
    assert torch.equal(halo_roll(x, 2, 3, +1, group), win.shift(x, 2, 3))
    assert torch.equal(halo_roll(x, 2, 3, -1, group), win.unshift(x, 2, 3))
    assert torch.equal(halo_roll(x, 2, 3, +1, group, fine=True), win.shift(x, 2, 3))
    assert group.ledger.total_messages() == 0


@pytest.mark.parametrize("fields, words", [
    ({"wp_h": 3}, ["wp_h = 3", "4 window rows", "grid_h 32", "window_h 8"]),
    ({"wp_w": 3}, ["wp_w = 3", "8 window columns"]),
    ({"sp": 3}, ["sp = 3", "4 attention heads"]),
    ({"wp_w": 8, "sp": 16}, ["sp = 16", "8 longitude points"]),
    ({"sp": 0}, ["positive integer"]),
    ({"wp_w": 8, "sp": 4}, ["sp = 4 leaves 2 longitude points", "half-window shift (4)"]),
])
def test_impossible_layouts_are_refused_with_the_numbers(fields: dict, words: list[str]) -> None:
    base = dict(grid_h=32, grid_w=64, window_h=8, window_w=8, n_heads=16 if fields.get("sp") == 16 else 4)
    with pytest.raises(ConfigError) as err:
        WindowLayout(**base, **fields)
    for word in words:
        assert word in str(err.value)


def test_world_size_must_match_the_layout() -> None:
    layout = WindowLayout(grid_h=32, grid_w=64, window_h=8, window_w=8, n_heads=4, wp_w=2, sp=2)
    with pytest.raises(ConfigError, match="2 x 2 ranks|= 4 ranks, but the job has 2"):
        layout.check_world(2)


@pytest.mark.parametrize("layout", PLAIN)
def test_measured_traffic_equals_the_closed_form(results: dict, layout: str) -> None:
    """What the ledger counted in a training step of the 4-block model is what the layout predicts."""
    from auroragpt.parallel.window_cost import swipe_step_comm

    sys.path.insert(0, str(WORKER.parent))
    import swipe_worker

    wp_h, wp_w, sp = (int(v) for v in layout.split("x"))
    cfg = swipe_worker.CFG
    predicted = swipe_step_comm(WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp), cfg, swipe_worker.BATCH)
    ledger = results[f"{layout}/model"]["ledger"]
    measured = {k: (v["bytes"], v["messages"]) for k, v in ledger.items() if v["bytes"] or v["messages"]}
    assert measured == predicted


@pytest.mark.parametrize("layout", PIPELINE)
@pytest.mark.parametrize("mode", ["fused", "plain"])
def test_pipeline_x_window_matches_one_rank(results: dict, layout: str, mode: str) -> None:
    """2 stages x WP=2: stage 1 starts with a shifted block, sent pre-shifted (fused) or not."""
    r = results[f"{layout}/{mode}"]
    for key in ("out", "xgrad", "pgrad"):
        assert r[key] <= TOL * r["scale"][key], f"{layout} {mode}: {key} differs by {r[key]:.3g}"


@pytest.mark.parametrize("layout", PIPELINE)
def test_fused_shift_costs_no_extra_message_or_round(results: dict, layout: str) -> None:
    """Folding the shift into the stage send: no more messages than plain PP + WP, one round fewer
    per rank and direction (the shifted block's own quadrant exchange is gone), fewer bytes."""
    fused, plain = results[f"{layout}/fused"], results[f"{layout}/plain"]
    assert fused["messages"] <= plain["messages"]
    wp_h, wp_w, sp = (int(v) for v in layout[4:].split("x"))
    assert fused["rounds"] == plain["rounds"] - 2 * wp_h * wp_w * sp  # stage 1's ranks x (shift + its gradient)
    assert fused["bytes"] < plain["bytes"]


def test_fsdp2_outside_window_parallel_matches_one_rank(results: dict) -> None:
    """FSDP2 over 2 replicas x WP=2 (1x2): each replica one sample; output and gradients as 1 rank."""
    r = results["fsdp2:1x2x1/model"]
    for key in ("out", "pgrad"):
        assert r[key] <= TOL * r["scale"][key], f"fsdp2 x wp: {key} differs by {r[key]:.3g}"


def test_tile_estimate_is_the_closed_form_split_over_stages() -> None:
    """The AERIS-scale estimate reuses the tested traffic model and divides weights and work by stages."""
    from auroragpt.parallel.window_cost import swipe_step_comm, tile_estimate
    from auroragpt.weather.model import get_weather_preset

    cfg = get_weather_preset("weather-40b")
    layout = WindowLayout.for_model(cfg, wp_h=4, wp_w=12, sp=4)
    one = tile_estimate(cfg, layout, pp=1, dp_shard=1, peak_tflops=100.0, link_gbps=10.0)
    three = tile_estimate(cfg, layout, pp=3, dp_shard=10, peak_tflops=100.0, link_gbps=10.0)
    assert one["weights_gib"] == pytest.approx(18 * cfg.num_params() / 2**30)
    assert three["weights_gib"] == pytest.approx(one["weights_gib"] / 30)
    assert one["comm_gib"] * 2**30 == sum(b for b, _ in swipe_step_comm(layout, cfg, 1, elem=2).values())
    assert three["comm_s"] == pytest.approx(one["comm_s"] / 3)
    assert three["compute_s"] == pytest.approx(one["compute_s"] / 3)


@pytest.mark.parametrize("layout", PLAIN)
def test_five_training_steps_match_one_device(results: dict, layout: str) -> None:
    """5 AdamW steps of the TrigFlow objective (noise drawn for the whole field, then split)."""
    r = results[f"{layout}/train"]
    assert len(r["losses"]) == 5
    for got, want in zip(r["losses"], r["reference"]):
        assert got == pytest.approx(want, rel=1e-5)
