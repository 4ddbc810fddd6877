"""The public runtime API on one rank, in this process and as a plain `python script.py`:
a working process group, wrap, collectives, History and timers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import auroragpt as ag
from auroragpt.errors import ConfigError, DistError
from auroragpt.parallel.blocks import find_blocks
from auroragpt.parallel.layout import data_parallel_layout
from runtime_cli_helpers import child_env


@pytest.fixture
def one_rank(clean_env: pytest.MonkeyPatch):
    info = ag.setup(seed=3)
    yield info
    ag.teardown()


def test_one_rank_gets_a_working_process_group(one_rank) -> None:
    assert (one_rank.rank, one_rank.world_size, one_rank.backend) == (0, 1, "gloo")
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    value = torch.tensor([2.5])
    dist.all_reduce(value)
    assert value.item() == 2.5
    assert ag.all_reduce_mean(1.5) == 1.5
    mean = ag.all_reduce_mean(torch.tensor([1, 2]))
    assert mean.dtype == torch.float64 and mean.tolist() == [1.0, 2.0]
    ag.barrier()
    assert ag.device() == one_rank.device and ag.setup() is one_rank


def test_plain_python_script_can_all_reduce(tmp_path: Path) -> None:
    """The 1-rank case a user meets first: no launcher, no MASTER_ADDR, no port."""
    script = tmp_path / "one.py"
    script.write_text("import torch, torch.distributed as dist\nimport auroragpt as ag\n"
                      "info = ag.setup()\nt = torch.tensor([float(dist.get_rank() + 4)])\ndist.all_reduce(t)\n"
                      "print('sum', t.item(), dist.get_world_size(), info.world_size)\n")
    result = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["sum", "4.0", "1", "1"]


def test_collectives_before_setup_say_what_to_do(clean_env: pytest.MonkeyPatch) -> None:
    ag.teardown()
    with pytest.raises(DistError, match=r"barrier\(\) needs a process group") as err:
        ag.barrier()
    assert "auroragpt.setup()" in err.value.hint
    with pytest.raises(DistError):
        ag.wrap(nn.Linear(2, 2), "fsdp")


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "hsdp"])
def test_wrap_on_one_rank_trains_like_the_plain_module(one_rank, mode: str) -> None:
    def run(wrapped: bool) -> list[float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        if wrapped:
            model = ag.wrap(model, mode)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.linspace(-1, 1, 24).reshape(8, 3)
        out = []
        for _ in range(3):
            loss = (model(x) - 1).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            out.append(loss.item())
        return out

    assert run(True) == pytest.approx(run(False), rel=1e-6)


def test_wrap_mixed_precision_computes_in_bf16(one_rank) -> None:
    x = torch.randn(4, 6)
    fsdp = ag.wrap(nn.Linear(6, 2), "fsdp", mixed_precision=True)
    assert fsdp(x).dtype == torch.bfloat16
    ddp = ag.wrap(nn.Linear(6, 2), "ddp", mixed_precision=True)
    assert ddp(x).dtype == torch.bfloat16
    assert ag.wrap(nn.Linear(6, 2), "ddp")(x).dtype == torch.float32


def test_wrap_checkpoints_the_named_blocks(one_rank) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    ag.wrap(model, "fsdp", activation_checkpointing="full", blocks=["0", "2"])
    assert "forward" in vars(model[0]) and "forward" in vars(model[2]) and "forward" not in vars(model[1])
    plain = nn.Linear(4, 4)  # no blocks: the whole forward is the checkpointed unit
    ag.wrap(plain, "ddp", activation_checkpointing="full")
    assert "forward" in vars(plain)


def test_find_blocks_by_layers_class_name_and_module() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
            self.head = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))

    net = Net()
    assert find_blocks(net) == list(net.layers)
    assert find_blocks(net, nn.Linear) == [*net.layers, net.head[0][0]]
    assert find_blocks(net, nn.Sequential) == [net.head]  # outermost matches only
    assert find_blocks(net, ["layers.1", net.head]) == [net.layers[1], net.head]
    assert find_blocks(nn.Linear(2, 2)) == []
    with pytest.raises(ConfigError, match="no submodule 'layers.7'"):
        find_blocks(net, "layers.7")
    with pytest.raises(ConfigError, match="is not a submodule"):
        find_blocks(net, [nn.Linear(2, 2)])
    with pytest.raises(ConfigError, match="is a Conv1d"):
        find_blocks(net, nn.Conv1d)


def test_data_parallel_layouts() -> None:
    assert (data_parallel_layout("fsdp", 8, 2).dp_replicate, data_parallel_layout("fsdp", 8, 2).dp_shard) == (1, 8)
    assert data_parallel_layout("ddp", 8, 2).data_parallel_mode == "ddp"
    hsdp = data_parallel_layout("hsdp", 8, 2)
    assert (hsdp.dp_replicate, hsdp.dp_shard, hsdp.data_parallel_mode) == (2, 4, "hsdp")
    with pytest.raises(ConfigError, match="cannot be split into 3 equal replica groups"):
        data_parallel_layout("hsdp", 8, 2, replicate=3)
    with pytest.raises(ConfigError, match="'zero3' is not known"):
        data_parallel_layout("zero3", 8, 2)


def test_history_strict_jsonl_summary_and_plots(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    history = ag.History(tmp_path / "h")
    for step, loss in enumerate([4.0, float("nan"), 2.0, float("inf"), 1.0], start=1):
        history.update(step=step, loss=torch.tensor(loss), lr=0.1 * step)
    lines = (tmp_path / "h" / "history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # strict: json.loads would accept NaN, so check the text
    assert "NaN" not in "".join(lines) and "Infinity" not in "".join(lines)
    assert [r["loss"] for r in records] == [4.0, None, 2.0, None, 1.0]
    assert history.line() == "step 5  loss 1  lr 0.5"
    summary = history.finalize()
    assert "loss: last 1  min 1  max 4  mean 2.333  (3 finite of 5)" in summary
    assert "lr: last 0.5  min 0.1  max 0.5  mean 0.3" in summary
    files = sorted(p.name for p in (tmp_path / "h").iterdir())
    assert files == ["history.jsonl", "history.txt", "history_loss.png", "history_lr.png"]  # no temporary left
    assert (tmp_path / "h" / "history_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "h" / "history.txt").read_text()
    assert summary in text and "step 1" in text and text.count("*") >= 3 + 5  # a text plot per metric
    again = ag.History(tmp_path / "h")  # a rerun into the same folder starts the file afresh
    again.update(loss=9.0)
    assert [json.loads(x) for x in (tmp_path / "h" / "history.jsonl").read_text().splitlines()] == [{"step": 1, "loss": 9.0}]


def test_history_rejects_what_is_not_a_scalar(tmp_path: Path) -> None:
    history = ag.History(tmp_path)
    with pytest.raises(ConfigError, match="loss has 3 elements"):
        history.update(step=1, loss=torch.ones(3))
    with pytest.raises(ConfigError, match="'fast' is not a number"):
        history.update(step=1, speed="fast")


def test_history_reduce_on_one_rank_records_the_spread(one_rank, tmp_path: Path) -> None:
    history = ag.History(tmp_path, reduce=True)
    record = history.update(step=1, loss=0.5)
    assert record == {"step": 1, "loss": 0.5, "loss_min": 0.5, "loss_max": 0.5}
    assert history.line() == "step 1  loss 0.5 [0.5, 0.5]"
    assert history.metric_names() == ["loss"]


def test_timers_context_decorator_and_report(one_rank) -> None:
    timers = type(ag.timers)()  # a private registry, so the global one stays untouched

    @timers("work")
    def work() -> int:
        return sum(range(1000))

    for _ in range(3):
        work()
    with timers("block", sync=True):
        pass
    timers.add("given", 0.25)
    stats = timers.stats()
    assert stats["work"]["calls"] == 3 and stats["block"]["calls"] == 1 and stats["work"]["ranks"] == 1
    assert stats["given"]["min_s"] == stats["given"]["mean_s"] == stats["given"]["max_s"] == 0.25
    report = timers.report()
    assert report.splitlines()[0].split() == ["timer", "calls", "ranks", "min", "s", "mean", "s", "max", "s", "ms/call"]
    assert any(line.startswith("given") and "250.000" in line for line in report.splitlines())
    timers.reset()
    assert timers.report() == "timers: nothing timed"
