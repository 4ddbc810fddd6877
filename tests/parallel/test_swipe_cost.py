"""The closed-form SWiPe traffic (window_cost) equals what real runs send, rank by rank.

Real processes on gloo, one training step each: pipeline (2 stages) x window (x sequence) layouts
with the fused and the plain stage send, FSDP2 outside a window layout, and the naive all-gather
baseline of bench/swipe.py. Every rank's `CommLedger` is compared with the closed form of its
stage; the README's paper-scale table is recomputed from `window_cost`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from auroragpt.parallel.comm_ledger import CommLedger
from auroragpt.parallel.window_cost import (fsdp_step_comm, naive_step_bytes, naive_step_comm, pipeline_step_comm,
                                            stage_send_messages, swipe_step_comm)
from auroragpt.parallel.window_layout import WindowLayout

HERE = Path(__file__).resolve().parent
WORKER = HERE / "swipe_cost_worker.py"
# one 8-rank world (process start-up dominates): the 4-rank pipelines run twice side by side, FSDP2
# has 4 replicas of a 2-rank layout, the naive baseline runs on 2x4 tiles
GROUPS = {8: ["pp2:1x2x1", "pp2:2x1x1", "pp2:1x2x2", "pp2:2x2x1", "fsdp2:1x2x1", "naive:2x4x1"]}
PIPELINE = [spec for specs in GROUPS.values() for spec in specs if spec.startswith("pp2:")]


def _worker_module():
    sys.path.insert(0, str(HERE))
    import swipe_cost_worker

    return swipe_cost_worker


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("swipe_cost")
    started = {}
    for world, specs in GROUPS.items():
        out = tmp / f"world{world}.json"
        env = dict(os.environ, WORLD_SIZE=str(world), SWIPE_INIT=f"file://{tmp / f'world{world}.rdv'}",
                   OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        started[world] = (out, [subprocess.Popen([sys.executable, str(WORKER), ",".join(specs), str(out)],
                                                 env=dict(env, RANK=str(r)), stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True) for r in range(world)])
    merged: dict = {}
    for world, (out, procs) in started.items():
        logs = []
        for proc in procs:
            try:
                logs.append(proc.communicate(timeout=300)[0][-3000:])
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                logs.append("[killed after 300 s]")
        assert out.exists(), f"world {world} wrote no results:\n" + "\n".join(logs)
        merged.update(json.loads(out.read_text()))
    return merged


def _measured(snapshot: dict) -> dict:
    return {k: (v["bytes"], v["messages"]) for k, v in snapshot.items() if v["bytes"] or v["messages"]}


def _table(snapshot: dict, predicted: dict) -> str:
    return CommLedger.from_snapshot(snapshot).table(predicted)


@pytest.mark.parametrize("spec", PIPELINE)
@pytest.mark.parametrize("mode", ["fused", "plain"])
def test_pipeline_traffic_equals_the_closed_form_on_every_rank(runs: dict, spec: str, mode: str) -> None:
    """Stage sends (fused: quadrants to the shifted windows' owners), their gradients, and each
    stage's own window/sequence traffic: per rank, bytes and messages, as `pipeline_step_comm` says."""
    worker = _worker_module()
    wp_h, wp_w, sp = (int(v) for v in spec[4:].split("x"))
    layout = WindowLayout.for_model(worker.CFG, wp_h=wp_h, wp_w=wp_w, sp=sp)
    stages = pipeline_step_comm(layout, worker.CFG, worker.BATCH, [0, worker.SPLIT], fused=mode == "fused")
    for rank, snapshot in enumerate(runs[f"{spec}/{mode}"]):
        predicted, measured = stages[rank // layout.world_size % 2], _measured(snapshot)
        print(f"\n{spec} {mode} rank {rank}\n" + _table(snapshot, predicted))
        assert measured == predicted, f"rank {rank}:\n" + _table(snapshot, predicted)


@pytest.mark.parametrize("spec", PIPELINE)
def test_fused_send_trades_the_shift_round_for_messages_to_the_owners(spec: str) -> None:
    """Closed form of the fusion: the stage send has one message per owner of the shifted windows
    (the rank's tile and its neighbours on the sp-strip grid), the receiving stage loses its first
    shift (no 'wp.shift' call for that block), and no rank sends more bytes than with plain PP."""
    worker = _worker_module()
    wp_h, wp_w, sp = (int(v) for v in spec[4:].split("x"))
    layout = WindowLayout.for_model(worker.CFG, wp_h=wp_h, wp_w=wp_w, sp=sp)
    fused, plain = (pipeline_step_comm(layout, worker.CFG, worker.BATCH, [0, 1], fused=f) for f in (True, False))
    rows, cols = wp_h, wp_w * sp
    assert fused[0]["pp.send"][1] == min(rows, 2) * min(cols, 2) == stage_send_messages(layout, True)
    assert plain[0]["pp.send"][1] == 1
    assert fused[1]["wp.shift"][1] == plain[1]["wp.shift"][1] // 2  # block 3's shift only
    for f, p in zip(fused, plain):
        assert sum(b for b, _ in f.values()) <= sum(b for b, _ in p.values())


def test_pipeline_of_one_stage_is_the_window_layout() -> None:
    worker = _worker_module()
    layout = WindowLayout.for_model(worker.CFG, wp_h=2, wp_w=2, sp=1)
    for fused in (True, False):
        assert pipeline_step_comm(layout, worker.CFG, 2, [0], fused=fused) == [swipe_step_comm(layout, worker.CFG, 2)]
    with pytest.raises(ValueError, match="must rise from 0"):
        pipeline_step_comm(layout, worker.CFG, 2, [0, 4], fused=True)


def test_fsdp2_outside_window_layout_traffic_equals_the_closed_form(runs: dict) -> None:
    """FSDP2 over 4 replicas of WP=2, each block its own unit: all-gathers (blocks twice: forward
    and again for backward; the root once) and reduce-scatters, from the parameter shapes alone
    (the output layer's 2 rows padded to 4)."""
    run = runs["fsdp2:1x2x1"]
    predicted = fsdp_step_comm(run["units"], run["dp"])
    assert run["dp"] == 4 and [2, 32] in run["units"][0]
    for rank, snapshot in enumerate(run["ledgers"]):
        measured = {k: v for k, v in _measured(snapshot).items() if k.startswith("fsdp.")}
        print(f"\nfsdp2 x 1x2x1 rank {rank}\n" + _table(snapshot, predicted))
        assert measured == predicted


def test_naive_baseline_is_measured_equal_to_its_closed_form_and_computes_the_same(runs: dict) -> None:
    """The bench's naive scheme really runs: same output and gradients as SWiPe, and its measured
    all-gather + reduce-scatter bytes are `naive_step_bytes`; SWiPe's are `swipe_step_comm`."""
    worker = _worker_module()
    run = runs["naive:2x4x1"]
    layout = WindowLayout.for_model(worker.CFG, wp_h=2, wp_w=4)
    assert run["out_err"] <= 1e-5 and run["grad_err"] <= 1e-5 * max(run["grad_scale"], 1.0)
    for naive, ours in zip(run["ledgers"]["naive"], run["ledgers"]["ours"]):
        assert _measured(naive) == naive_step_comm(layout, worker.CFG, worker.BATCH)
        assert _measured(ours) == swipe_step_comm(layout, worker.CFG, worker.BATCH)
    assert naive_step_bytes(layout, worker.CFG, worker.BATCH) == sum(naive_step_comm(layout, worker.CFG, worker.BATCH)[k][0]
                                                                     for k in ("naive.all_gather", "naive.reduce_scatter"))


def _readme_section() -> str:
    text = (HERE.parents[1] / "README.md").read_text()
    start = text.index("### SWiPe")
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1)) if i > 0)
    return text[start:end]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_readme_paper_scale_table_is_window_cost() -> None:
    """Every row of the README's paper-scale table is `tile_estimate` of the layout the row names,
    under the stated Aurora tile figures (the numbers are not typed in by hand)."""
    from auroragpt.parallel.window_cost import AURORA_TILE_LINK_GBPS, AURORA_TILE_PEAK_TFLOPS, tile_estimate
    from auroragpt.weather.model import get_weather_preset

    rows = [_cells(line) for line in _readme_section().splitlines() if line.startswith("| weather-")]
    assert len(rows) >= 3
    for cells in rows:
        preset, shape, replicas, micro, tiles, weights, acts, swipe, fsdp, split, step, per_tile, machine = cells
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+), pp (\d+)", shape)
        wp_h, wp_w, sp, pp = (int(v) for v in m.groups())
        n_rep, dp_shard = (int(v) for v in re.fullmatch(r"(\d+) \((\d+)\)", replicas).groups())
        cfg = get_weather_preset(preset)
        layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
        est = tile_estimate(cfg, layout, pp=pp, dp_shard=dp_shard, microbatches=int(micro),
                            peak_tflops=AURORA_TILE_PEAK_TFLOPS, link_gbps=AURORA_TILE_LINK_GBPS)
        n_tiles = layout.world_size * pp * n_rep
        want = [f"{n_tiles:,}", f"{est['weights_gib']:.1f}", f"{est['activations_gib']:.1f}", f"{est['stage_comm_gib']:.2f}",
                f"{est['fsdp_gib']:.1f}", f"{est['compute_s']:.2f} + {est['stage_comm_s']:.2f}", f"{est['step_s']:.1f}",
                f"{est['sustained_tflops']:.0f}", f"{est['sustained_tflops'] * n_tiles / 1e6:.1f}"]
        assert [tiles, weights, acts, swipe, fsdp, split, step, per_tile, machine] == want, preset


def test_readme_benchmark_bytes_are_the_closed_forms() -> None:
    """The README's measured bytes per rank (bench/swipe.py's default model) are the closed forms
    the bench checks them against, and the ratio column is their quotient."""
    from auroragpt.weather.model import get_weather_preset

    cfg = get_weather_preset("weather-tiny", grid_h=128, grid_w=256, dim=16, n_heads=2, ffn_dim=32, n_vars=2,
                             n_cond=2, time_freqs=8)
    rows = [_cells(line) for line in _readme_section().splitlines() if re.match(r"\| \d+x\d+x\d+ \|", line)]
    assert {r[0] for r in rows} >= {"2x2x1", "1x4x1"}
    for layout_name, _, ours, naive, ratio, *_ in rows:
        wp_h, wp_w, sp = (int(v) for v in layout_name.split("x"))
        layout = WindowLayout.for_model(cfg, wp_h=wp_h, wp_w=wp_w, sp=sp)
        closed = sum(b for b, _ in swipe_step_comm(layout, cfg, 1).values())
        assert int(ours.replace(",", "")) == closed, layout_name
        if sp == 1:
            assert int(naive.replace(",", "")) == naive_step_bytes(layout, cfg, 1)
            assert ratio == f"{naive_step_bytes(layout, cfg, 1) / closed:.1f}x"
