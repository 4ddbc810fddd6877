"""SWiPe through the trainer: `auroragpt launch -n N -- auroragpt train` of a reduced weather-tiny
(dim 32, 6 blocks, 16 x 32 grid, 8 x 8 windows; 6 blocks so that a 2-stage pipeline's second stage
starts with a shifted block and takes the fused shift) under every layout of issue 15 gives the
1-rank losses and gradient norms, and checkpoints move between layouts. The learning rate is high
so that the adaLN-zero gates open within 5 steps: at a usual one the attention barely reaches the
loss yet, and a wrong shift changed it by < 1e-6 (the gradient norm sees it from step 1).

All jobs of a phase start at once (most of their time is process start-up): phase 1 trains
5 steps on every selected layout, phase 2 continues two of them from their step-3 checkpoint elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from auroragpt.config import load_config
from auroragpt.errors import ConfigError

BIN = Path(sys.executable).parent
CONFIG = """
[model]
preset = "weather-tiny"
dim = 32
n_heads = 4
ffn_dim = 64
n_layers = 6

[data]
micro_batch = 2
global_batch = 4

[weather]
variables = "geopotential500,temperature850,2m_temperature"

[train]
steps = 5
seed = 7
spike_factor = 100.0

[optim]
lr = 3e-2
warmup_steps = 1

[checkpoint]
every = 3

[metrics]
plots = false
"""
# name -> (ranks, overrides); dp_shard = 1 where wp x sp x pp fill the world (its default -1 would too)
LAYOUTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "one_rank": (1, ()),
    "wp2": (2, ("--parallel.wp=2",)),
    "wp4_2x2": (4, ("--parallel.wp=4", "--parallel.wp_lat=2")),
    "sp2": (2, ("--parallel.sp=2",)),
    "wp2_sp2": (4, ("--parallel.wp=2", "--parallel.sp=2")),
    "pp2_wp2": (4, ("--parallel.pp=2", "--parallel.wp=2")),
    "pp2_wp2_sp2": (8, ("--parallel.pp=2", "--parallel.wp=2", "--parallel.sp=2")),
    "fsdp2_wp2": (4, ("--parallel.dp_shard=2", "--parallel.wp=2")),
}
# The default suite keeps one layout per mechanism the trainer wires (2-D tiles, the pipeline with
# its fused shift, FSDP2 outside; SP over the mesh's sp group runs as a resume target below); the
# others run with -m slow. Every layout's window attention itself is checked block by block, in
# the default suite, by tests/parallel/test_swipe.py.
DEFAULT = {"wp4_2x2", "pp2_wp2", "fsdp2_wp2"}
# continued from the step-3 checkpoint of the first on the layout of the second
RESUMES = {"wp4_2x2_to_one_rank": ("wp4_2x2", "one_rank"), "pp2_wp2_to_sp2": ("pp2_wp2", "sp2")}
REL = 1e-5


def _wanted(session) -> set[str]:
    """The layouts the selected tests of this module read (the fixture starts only those)."""
    names = {"one_rank"}
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module.__name__ == __name__:
            names |= {params["layout"]} if "layout" in params else set()
            names |= {RESUMES[params["name"]][0]} if "name" in params else set()
            names |= {"pp2_wp2"} if item.name == "test_the_log_names_the_swipe_layout" else set()
    return names


def _start(root: Path, name: str, layout: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    ranks, overrides = LAYOUTS[layout]
    run_dir = root / name
    cmd = [str(BIN / "auroragpt"), "launch", "-n", str(ranks), "--", str(BIN / "auroragpt"), "train",
           "--config", str(root / "run.toml"), f"--run.dir={run_dir}", *overrides, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(root / f"{name}.log", "wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), run_dir


def _wait_all(jobs: dict[str, tuple[subprocess.Popen, Path]], root: Path, timeout: float = 300) -> None:
    failed = {}
    for name, (proc, _) in jobs.items():
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
        if rc != 0:
            failed[name] = f"exit {rc}:\n{(root / f'{name}.log').read_text()[-3000:]}"
    assert not failed, "\n".join(f"--- {k}: {v}" for k, v in failed.items())


def _losses(run_dir: Path) -> dict[int, tuple[float, float]]:
    """step -> (loss, gradient norm)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in records}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, era5_zarr) -> dict:
    root = tmp_path_factory.mktemp("swipe_train")
    (root / "run.toml").write_text(CONFIG.replace("[data]", f'[data]\npath = "{era5_zarr}"'))
    wanted = _wanted(request.session)
    sources = {source for source, _ in RESUMES.values()}
    no_saves = ("--checkpoint.every=0", "--checkpoint.save_at_end=false")
    jobs = {name: _start(root, name, name, *(() if name in sources else no_saves))
            for name in LAYOUTS if name in wanted}
    _wait_all(jobs, root)
    losses = {name: _losses(run_dir) for name, (_, run_dir) in jobs.items()}
    resumed = {}
    for name, (source, target) in RESUMES.items():
        if source not in wanted:
            continue
        step3 = root / source / "checkpoints" / "step_00000003"
        resumed[name] = _start(root, name, target, f"--checkpoint.load_from={step3}", *no_saves)
    _wait_all(resumed, root)
    losses.update({name: _losses(run_dir) for name, (_, run_dir) in resumed.items()})
    return {"root": root, "losses": losses}


@pytest.mark.parametrize("layout", [pytest.param(name, marks=() if name in DEFAULT else pytest.mark.slow)
                                    for name in LAYOUTS if name != "one_rank"])
def test_five_training_steps_on_a_swipe_layout_match_one_rank(runs: dict, layout: str) -> None:
    one, got = runs["losses"]["one_rank"], runs["losses"][layout]
    assert sorted(one) == sorted(got) == [1, 2, 3, 4, 5]
    for step in one:
        assert got[step] == pytest.approx(one[step], rel=REL), (layout, step, "(loss, grad norm)", got[step], one[step])
    ranks, _ = LAYOUTS[layout]
    log = (runs["root"] / f"{layout}.log").read_text()
    assert f"for 5 steps on {ranks} ranks" in log


def test_the_log_names_the_swipe_layout(runs: dict) -> None:
    log = (runs["root"] / "pp2_wp2.log").read_text()
    assert "layout pp=2 dp_replicate=1 dp_shard=1 tp=1 (none) wp=2 (1x2 tiles) sp=1" in log


@pytest.mark.parametrize("name", list(RESUMES))
def test_a_checkpoint_of_one_layout_continues_on_another_like_an_uninterrupted_run(runs: dict, name: str) -> None:
    """DCP holds whole parameters with their single-device names, whatever the layout that saved them."""
    one, got = runs["losses"]["one_rank"], runs["losses"][name]
    assert sorted(got) == [4, 5]
    for step in got:
        assert got[step] == pytest.approx(one[step], rel=REL), (name, step, "(loss, grad norm)", got[step], one[step])
    assert "resumed from" in (runs["root"] / f"{name}.log").read_text()


def _check(tmp_path: Path, world: int, preset: str, *overrides: str) -> None:
    """The trainer's layout check, as `auroragpt train` runs it before any process group exists."""
    from auroragpt.parallel.layout import ParallelLayout, validate
    from auroragpt.weather.model import get_weather_preset

    cfg = load_config(None, [f"--model.preset={preset}", "--data.synthetic=true", "--train.steps=1",
                             "--data.micro_batch=2", "--data.global_batch=4", *overrides])
    import dataclasses

    fields = {f.name for f in dataclasses.fields(ParallelLayout)}
    raw = {k: v for k, v in dataclasses.asdict(cfg.parallel).items() if k in fields}
    if preset.startswith("weather-"):
        model_cfg = get_weather_preset(preset, grid_h=16, grid_w=32)  # 2 x 4 windows of 8 x 8, 4 heads
    else:
        from auroragpt.model.presets import get_preset

        model_cfg = get_preset(preset)
    validate(ParallelLayout.from_dict(raw), world, model_cfg, cfg.data.global_batch, cfg.data.micro_batch)


@pytest.mark.parametrize("world, preset, overrides, words", [
    (2, "tiny", ("--parallel.wp=2",), ["wp = 2", "language model", "tp, pp, dp_shard"]),
    (2, "tiny", ("--parallel.sp=2",), ["sp = 2", "language model"]),
    (3, "weather-tiny", ("--parallel.wp=3",), ["wp_w = 3", "4 window columns"]),
    (4, "weather-tiny", ("--parallel.wp=4", "--parallel.wp_lat=4"), ["wp_h = 4", "2 window rows"]),
    (4, "weather-tiny", ("--parallel.wp=4", "--parallel.wp_lat=3"), ["wp_lat (3) must divide wp (4)"]),
    (3, "weather-tiny", ("--parallel.sp=3",), ["sp = 3", "4 attention heads"]),
    (16, "weather-tiny", ("--parallel.wp=4", "--parallel.sp=4"), ["sp = 4 leaves 2 longitude points", "half-window shift (4)"]),
    (2, "weather-tiny", ("--parallel.wp=2", "--parallel.sp=2"), ["world size 2", "wp (2) x sp (2) = 4", "(and wp, sp)"]),
    (4, "weather-tiny", ("--parallel.wp=2", "--parallel.dp_shard=1"), ["wp (2) x sp (1) = 2 ranks, but the job has 4"]),
    (8, "weather-tiny", ("--parallel.wp=2", "--parallel.pp=2", "--parallel.dp_shard=2"), ["pp = 2 with dp_replicate x dp_shard = 1 x 2"]),
    (4, "weather-tiny", ("--parallel.wp=2", "--parallel.tp=2", "--parallel.dp_shard=1"), ["tp = 2", "tensor parallelism"]),
    (4, "weather-tiny", ("--parallel.wp=2", "--parallel.pp=2", "--parallel.pp_schedule=Interleaved1F1B",
                         "--parallel.pp_virtual_stages=2"), ["pp_virtual_stages = 2", "one stage per pipeline rank"]),
    (6, "weather-tiny", ("--parallel.wp=2", "--parallel.pp=3"), ["n_layers (4) is not divisible by pp (3)"]),
])
def test_impossible_swipe_layouts_are_refused_with_the_numbers(tmp_path, world, preset, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        _check(tmp_path, world, preset, *overrides)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_language_model_with_wp_exits_2_before_any_process_group(tmp_path, capsys, monkeypatch) -> None:
    import auroragpt.train.trainer as trainer
    from auroragpt.cli import main

    def reached(*_args, **_kwargs):
        raise AssertionError("a language model with wp = 2 reached the job (process group, model)")

    monkeypatch.setattr(trainer, "_train", reached)
    config = tmp_path / "lm.toml"
    config.write_text('[model]\npreset = "tiny"\n[data]\nsynthetic = true\n[train]\nsteps = 1\n[parallel]\nwp = 2\n')
    rc = main(["train", "--config", str(config), f"--run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "wp = 2" in err and "language model" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
