"""Damaged checkpoints, a second job on a run folder, and runs that learn nothing, driven through
`auroragpt train` as a user runs it (one process): every damage kind is one clear error naming
the file, or a fallback to the newest intact checkpoint with a warning naming what was skipped;
never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auroragpt.cli import main

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
steps = 6

[optim]
lr = 1e-3
warmup_steps = 0

[checkpoint]
every = 2
keep_last = 5

[metrics]
plots = false
"""


@pytest.fixture
def capfd(capfd):
    """capfd that also sees the package's log lines (its handler keeps the first stderr it met)."""
    import logging

    class Keep(logging.Handler):
        lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    keep = Keep()
    logger = logging.getLogger("auroragpt")
    logger.addHandler(keep)
    original = capfd.readouterr

    def readouterr():
        out, err = original()
        text = "\n".join(keep.lines)
        keep.lines.clear()
        return type("Captured", (), {"out": out, "err": err + "\n" + text})()

    capfd.readouterr = readouterr
    yield capfd
    logger.removeHandler(keep)


def _train(config: Path, run_dir: Path, *extra: str) -> int:
    return main(["train", "--config", str(config), f"--run.dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 1-rank run with checkpoints at steps 2, 4 and 6."""
    root = tmp_path_factory.mktemp("integrity")
    config = root / "run.toml"
    config.write_text(CONFIG)
    assert _train(config, root / "run") == 0
    return config, root / "run"


def _garbage_inside(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 3)
        f.write(os.urandom(min(64 << 10, path.stat().st_size // 3)))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "meta.json not JSON": ("meta.json", lambda p: p.write_text('{"step": 6, "tokens_seen": ')),
    ".metadata random bytes": (".metadata", lambda p: p.write_bytes(os.urandom(p.stat().st_size))),
    "shard truncated": ("__0_0.distcp", _truncate),
    "64 KiB garbage inside a shard": ("__0_0.distcp", _garbage_inside),
    "rank RNG file damaged": ("rank_00000.pt", _garbage_inside),
    "shard missing": ("__0_0.distcp", lambda p: p.unlink()),
}


def _damaged_copy(finished, tmp_path: Path, kind: str) -> tuple[Path, Path]:
    config, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    name, damage = DAMAGE[kind]
    target = copy / "checkpoints" / "step_00000006" / name
    damage(target)
    return config, copy


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _one_paragraph(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith(("auroragpt train: error", "  fix:"))]
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("auroragpt train: error"), err
    return "\n".join(lines)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_resume_skips_a_damaged_latest_checkpoint_with_a_warning(finished, tmp_path, capfd, kind):
    config, run = _damaged_copy(finished, tmp_path, kind)
    assert _train(config, run, "--train.steps=8") == 0
    err = capfd.readouterr().err
    assert "skipped the newer damaged checkpoint(s): step_00000006" in err, err
    assert DAMAGE[kind][0] in err.split("skipped the newer damaged")[1].splitlines()[0], err
    assert "resumed from" in err and "step_00000004 at step 4" in err, err
    assert _steps(run) == list(range(1, 9))


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_load_from_a_damaged_checkpoint_is_one_clear_error(finished, tmp_path, capfd, kind):
    config, damaged = _damaged_copy(finished, tmp_path, kind)
    target = damaged / "checkpoints" / "step_00000006"
    assert _train(config, tmp_path / "fresh", f"--checkpoint.load_from={target}", "--train.steps=8") == 2
    text = _one_paragraph(capfd.readouterr().err)
    assert str(target) in text and DAMAGE[kind][0] in text, text


def test_load_from_a_run_folder_gets_past_its_damaged_latest(finished, tmp_path, capfd):
    config, damaged = _damaged_copy(finished, tmp_path, "64 KiB garbage inside a shard")
    fresh = tmp_path / "fresh"
    assert _train(config, fresh, f"--checkpoint.load_from={damaged}", "--train.steps=8") == 0
    err = capfd.readouterr().err
    assert "skipped the newer damaged checkpoint(s): step_00000006" in err
    assert _steps(fresh) == [5, 6, 7, 8]


def test_every_checkpoint_damaged_is_refused_naming_them(finished, tmp_path, capfd):
    config, run = _damaged_copy(finished, tmp_path, "shard truncated")
    for step in (2, 4):
        _truncate(run / "checkpoints" / f"step_{step:08d}" / "__0_0.distcp")
    assert _train(config, run, "--train.steps=8") == 2
    text = _one_paragraph(capfd.readouterr().err)
    assert "no intact checkpoint" in text and all(f"step_{s:08d}" in text for s in (2, 4, 6)), text


def test_resume_false_never_continues_an_older_run(finished, tmp_path, capfd):
    config, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert _train(config, copy, "--checkpoint.resume=false", "--train.steps=3") == 2
    text = _one_paragraph(capfd.readouterr().err)
    assert "checkpoint.resume = false" in text and "step_00000006" in text and "new run.dir" in text, text
    assert _steps(copy) == list(range(1, 7))  # nothing written


def test_a_run_whose_losses_are_all_non_finite_does_not_exit_0(tmp_path, capfd, monkeypatch):
    import torch

    import auroragpt.train.trainer as trainer

    monkeypatch.setattr(trainer, "cross_entropy", lambda logits, targets: logits.float().sum() * torch.nan)
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.replace("plots = false", "plots = true"))
    run = tmp_path / "run"
    assert _train(config, run, "--train.steps=3", "--checkpoint.every=0", "--checkpoint.save_at_end=false") == 2
    assert "every one of the 3 steps of this run had a non-finite loss" in _one_paragraph(capfd.readouterr().err)
    # metrics.jsonl is strict JSON (NaN as null, flagged) and the stopped run has its summary and plots
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
        assert record["loss"] is None and "loss" in record["non_finite"]
    assert "loss: no finite value" in (run / "summary.txt").read_text()
    assert (run / "loss.png").stat().st_size > 0


# -- one job per run folder ---------------------------------------------------------------------

HOLDER = """
import sys, time
from auroragpt.train.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_job_on_a_locked_folder_is_refused_until_the_first_dies(tmp_path, capfd):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _train(config, run, "--train.steps=2") == 2
        text = _one_paragraph(capfd.readouterr().err)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in text and "in use" in text, text
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # released by the kernel on any exit, SIGKILL included
        holder.wait(timeout=10)
    assert _train(config, run, "--train.steps=2") == 0
    assert not (run / ".lock.owner").exists()


def test_a_dead_host_is_recognised_by_its_stale_heartbeat(tmp_path, capfd):
    from auroragpt.train.run_lock import OWNER, STALE_S, RunLock, RunLocked

    owner = tmp_path / OWNER
    owner.write_text(json.dumps({"host": "node-that-died", "pid": 4242, "started": "earlier"}))
    with pytest.raises(RunLocked, match="pid 4242 on host node-that-died"):
        RunLock(tmp_path).acquire()  # fresh heartbeat: it may be alive on a file system flock does not span
    old = time.time() - STALE_S - 5
    os.utime(owner, (old, old))
    lock = RunLock(tmp_path).acquire()
    try:
        assert json.loads(owner.read_text())["pid"] == os.getpid()
        assert "no longer running" in capfd.readouterr().err
    finally:
        lock.release()


# -- async saves ----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_an_async_save_is_published_as_soon_as_it_is_written(tmp_path):
    """Not when the next save starts: a crash after it must not lose it."""
    import torch

    from auroragpt.train.checkpoint import Checkpointer
    from auroragpt.model.checkpoint_integrity import find_damage

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    saver = Checkpointer(tmp_path, keep_last=2, async_save=True)
    saver.save(3, [model], [optimizer], {"note": "async"})
    final = tmp_path / "checkpoints" / "step_00000003"
    deadline = time.monotonic() + 30
    while not (final / "meta.json").exists():
        assert time.monotonic() < deadline, "the async checkpoint was never published"
        time.sleep(0.02)
    assert find_damage(final) == []
    saver.wait()


@pytest.mark.parametrize("kind", ["64 KiB garbage inside a shard", "shard truncated", "meta.json not JSON"])
def test_the_inference_loader_refuses_a_damaged_checkpoint_naming_the_file(finished, tmp_path, kind):
    """eval, serve and export load through `load_inference_model`: a damaged shard must not load silently."""
    from auroragpt.model.loading import CheckpointError, load_inference_model

    _, damaged = _damaged_copy(finished, tmp_path, kind)
    target = damaged / "checkpoints" / "step_00000006"
    with pytest.raises(CheckpointError) as caught:
        load_inference_model(target)
    assert str(target) in str(caught.value) and DAMAGE[kind][0] in str(caught.value)
    model, meta = load_inference_model(damaged / "checkpoints" / "step_00000004")
    assert meta["step"] == 4
