"""The public runtime API on 2 real processes (gloo) through `auroragpt launch`: ag.wrap matches a
single process, the example writes its History, and the README's script runs as printed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from runtime_cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("api_wrap_worker.py"))


def rank_json(stdout: str, rank: int = 0) -> dict:
    lines = [line.split("] ", 1)[1] for line in stdout.splitlines() if line.startswith(f"[rank {rank}] {{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_wrap_on_two_ranks_gives_the_losses_of_one(tmp_path: Path) -> None:
    """5 steps of AdamW on a residual MLP: every wrap mode on 2 ranks (each on half the batch)
    against the plain module on the whole batch in one process. Then values known per rank
    through all_reduce_mean, the timers' report and a reduced History."""
    plain = run_cli("launch", "-n", "1", "--", sys.executable, WORKER, "plain", timeout=180)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    reference = rank_json(plain.stdout)["plain"]
    result = run_cli("launch", "-n", "2", "--", sys.executable, WORKER, str(tmp_path / "h"), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    found = rank_json(result.stdout)
    assert set(found["losses"]) == {"fsdp", "fsdp_ac", "fsdp_blocks_by_class", "ddp", "hsdp", "hsdp_two_replicas",
                                     "hsdp_two_replicas_seeded_per_rank"}
    for mode, losses in found["losses"].items():
        assert losses == pytest.approx(reference, rel=2e-6, abs=1e-7), mode
    assert len(set(reference)) == 5  # the loss moves: the steps did train
    # FSDP really shards (each rank holds about half), DDP and pure replicas hold everything.
    assert 0.4 < found["share"]["fsdp"] < 0.6 and 0.4 < found["share"]["hsdp"] < 0.6
    assert found["share"]["ddp"] == 1.0 and found["share"]["hsdp_two_replicas"] == 1.0
    known = found["known"]
    assert known["float"] == 1.5 and known["tensor"] == [0.5, 4.0]
    assert {k: known["timers"][k] for k in ("ranks", "min_s", "mean_s", "max_s")} == {"ranks": 2, "min_s": 1.0, "mean_s": 1.5, "max_s": 2.0}
    # History: rank 0 alone writes, the mean over ranks with the spread, and a summary over steps.
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["history.jsonl", "history.txt", "history_value.png"]
    records = [json.loads(line) for line in (tmp_path / "h" / "history.jsonl").read_text().splitlines()]
    assert records == [{"step": s, "value": 10 * s + 0.5, "value_min": 10.0 * s, "value_max": 10 * s + 1.0} for s in (1, 2, 3)]
    assert "value: last 30.5  min 10.5  max 30.5  mean 20.5  (3 finite of 3)" in known["summary"]


def test_example_writes_one_history_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    result = run_cli("launch", "-n", "2", "--", "python", str(ROOT / "examples" / "mlp_synthetic.py"),
                     "--out", str(out), "--steps", "12", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["history.jsonl", "history.txt", "history_loss.png"]
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))  # one writer: every step once
    assert all(r["loss_min"] <= r["loss"] <= r["loss_max"] for r in records)
    assert any(r["loss_min"] < r["loss_max"] for r in records)  # the ranks saw different batches
    assert (out / "history_loss.png").read_bytes()[:4] == b"\x89PNG"
    summary = re.search(r"\[rank 0\]   loss: last \S+  min \S+  max \S+  mean \S+", result.stdout)
    assert summary, result.stdout
    assert "[rank 1]   loss:" not in result.stdout  # print0
    assert re.search(r"\[rank 0\] step\s+12\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+", result.stdout), result.stdout  # timers


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your own script\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's 'Your own script' section has no python block"
    return match.group(1)


def test_readme_script_runs_verbatim_on_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "my_script.py"
    script.write_text(readme_script())
    result = run_cli("launch", "-n", "2", "--", sys.executable, str(script), timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    means = {}
    for rank in (0, 1):
        found = re.findall(rf"\[rank {rank}\] rank {rank} of 2: mean final loss over ranks (\S+)", result.stdout)
        assert len(found) == 1, result.stdout
        means[rank] = found[0]
    assert means[0] == means[1] and float(means[0]) > 0
    assert (tmp_path / "out" / "my_script" / "history.jsonl").is_file()
    assert (tmp_path / "out" / "my_script" / "history_loss.png").is_file()
