"""SFT and DPO runs through the real CLI: parallel runs match one rank, the precomputed reference
matches the live one (and a stale cache is refused), SIGKILL + resume is exact, and a synthetic
preference task is learned."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from post_fixtures import BIN, chat_records, child_env, preference_records, read_metrics, run_cli, write_jsonl

STEPS = 8


def _write_config(path: Path, run_dir: Path, file_list: Path, tokenizer: Path, objective: str, **sections) -> Path:
    base = {  # untied embeddings: pipeline stages cannot share one, and every run here compares with 1 rank
        "model": {"preset": "tiny", "n_layers": 2, "tie_embeddings": False},
        "data": {"file_list": str(file_list), "tokenizer": str(tokenizer), "seq_len": 32, "micro_batch": 2,
                 "global_batch": 8},
        "train": {"steps": STEPS, "objective": objective, "spike_factor": 1e9},
        "optim": {"lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 2},
        "checkpoint": {"every": 4, "save_at_end": True},
        "metrics": {"plots": False},
        "run": {"dir": str(run_dir)},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}")
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


@pytest.fixture(scope="module")
def post_data(tmp_path_factory, tokenizer_path):
    """Tokenized chat and preference data, and a 1-rank SFT run (the DPO starting point)."""
    root = tmp_path_factory.mktemp("postrun")
    write_jsonl(root / "chat.jsonl", chat_records(64))
    write_jsonl(root / "pref.jsonl", preference_records(64))
    corpora = (("chat", "chat"), ("pref", "preference"))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two single-process runs: one per core
        results = list(pool.map(lambda c: run_cli("data", "tokenize", root / f"{c[0]}.jsonl", "--output-prefix",
                                                   root / c[0], "--tokenizer", tokenizer_path, "--format", c[1],
                                                   "--workers", "1"), corpora))
    for (name, _), result in zip(corpora, results):
        assert result.returncode == 0, result.stderr
        (root / f"{name}_list.txt").write_text(f"1.0 {root / name} {name}\n")
    sft = _write_config(root / "sft.toml", root / "sft1", root / "chat_list.txt", tokenizer_path, "sft")
    result = run_cli("train", "--config", sft)
    assert result.returncode == 0, result.stderr
    return {"root": root, "tokenizer": tokenizer_path, "sft_losses": _losses(root / "sft1"),
            "init": root / "sft1" / "checkpoints" / f"step_{STEPS:08d}"}


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir)]


def _dpo_config(post_data, name: str, **post) -> Path:
    root = post_data["root"]
    return _write_config(root / f"{name}.toml", root / name, root / "pref_list.txt", post_data["tokenizer"], "dpo",
                         checkpoint={"init_from": str(post_data["init"])}, post={"beta": 0.1, **post})


NO_CHECKPOINTS = {"every": 0, "save_at_end": False}  # for runs only compared with others
LAYOUTS = {"fsdp2": {"dp_shard": -1}, "tp": {"dp_shard": 1, "tp": 2}, "pp": {"dp_shard": 1, "pp": 2}}
DPO_LAYOUTS = {"fsdp2": ("fsdp2", "live"), "ddp": ("ddp", "live"), "tp": ("tp", "live"),
               "tp-loss-parallel": ("tp_loss_parallel", "live"),
               "pp": ("pp", "live"), "pp-precomputed": ("pp", "precomputed"), "hsdp": ("hsdp", "live")}
# log-probs from logits left sharded over the vocabulary (torch's loss_parallel), as a large-vocabulary run uses
DPO_ONLY_LAYOUTS = {"tp_loss_parallel": {"dp_shard": 1, "tp": 2, "loss_parallel": "true"},
                    "ddp": {"dp_replicate": 2, "dp_shard": 1},
                    "hsdp": {"dp_replicate": 2, "dp_shard": 2}}  # the one 4-rank case


def _needed_runs(item: pytest.Item) -> list[str]:
    """The runs of `runs` a test of this module reads."""
    name, param = item.originalname, getattr(getattr(item, "callspec", None), "params", {})
    if name == "test_sft_two_rank_layouts_match_one_rank":
        return [f"sft2{param['layout']}"]
    if name == "test_packed_sft_under_pipeline_parallelism_matches_one_rank":
        return ["sftpack1", "sftpack2pp"]
    if name == "test_dpo_two_rank_layouts_match_one_rank":
        pre = ["dpo_pre"] if DPO_LAYOUTS[param["case"]][1] == "precomputed" else []
        return ["dpo_live1", f"dpo_2{param['case']}", *pre]
    if name == "test_precomputed_reference_matches_live_and_a_stale_cache_is_refused":
        return ["dpo_live1", "dpo_pre"]
    if name in ("test_dpo_starts_at_ln2", "test_sigkill_and_resume_give_identical_losses"):
        return ["dpo_live1"]
    if name == "test_synthetic_preference_task_reaches_reward_accuracy_above_0_9":
        return ["dpo_learn"]
    return []


def _run_jobs(post_data) -> dict[str, tuple]:
    """Every run a test of this module may read: (argv for run_cli, timeout); configs written here."""
    root, tok = post_data["root"], post_data["tokenizer"]
    launch = ("launch", "-n", "2", "--launcher", "torchrun", "--", str(BIN / "auroragpt"), "train", "--config")
    jobs = {}
    for layout, parallel in LAYOUTS.items():
        config = _write_config(root / f"sft2{layout}.toml", root / f"sft2{layout}", root / "chat_list.txt", tok, "sft",
                               parallel=parallel, checkpoint=NO_CHECKPOINTS)
        jobs[f"sft2{layout}"] = (*launch, config)
    for name, parallel in (("sftpack1", {}), ("sftpack2pp", LAYOUTS["pp"])):
        config = _write_config(root / f"{name}.toml", root / name, root / "chat_list.txt", tok, "sft",
                               post={"pack": True}, parallel=parallel, checkpoint=NO_CHECKPOINTS)
        jobs[name] = (*launch, config) if parallel else ("train", "--config", config)
    jobs["dpo_live1"] = ("train", "--config", _dpo_config(post_data, "dpo_live1", reference="live"))
    # 1-rank DPO whose reference log-probs are precomputed into root/refcache.npz
    jobs["dpo_pre"] = ("train", "--config", _dpo_config(post_data, "dpo_pre", reference="precomputed",
                                                          reference_cache=str(root / "refcache.npz")))
    for case, (layout, reference) in DPO_LAYOUTS.items():
        cache = {"reference_cache": str(root / f"refcache_{case}.npz")} if reference == "precomputed" else {}
        two = _dpo_config(post_data, f"dpo_2{case}", reference=reference, **cache)
        text = two.read_text().replace("every = 4", "every = 0").replace("save_at_end = true", "save_at_end = false")
        two.write_text(text + "[parallel]\n" + "".join(f"{k} = {v}\n" for k, v in {**LAYOUTS, **DPO_ONLY_LAYOUTS}[layout].items()))
        ranks = "4" if layout == "hsdp" else "2"
        jobs[f"dpo_2{case}"] = (launch[0], "-n", ranks, *launch[3:], two)
    learn = _dpo_config(post_data, "dpo_learn", reference="precomputed", reference_cache=str(root / "learn.npz"))
    text = learn.read_text().replace(f"steps = {STEPS}", "steps = 40").replace("every = 4", "every = 0")
    learn.write_text(text.replace("lr = 0.002", "lr = 0.003"))
    jobs["dpo_learn"] = ("train", "--config", learn)
    return jobs


def _timed_run(args: tuple) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = run_cli(*args, timeout=300)
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def runs(post_data, request) -> Iterator[tuple[Path, dict[str, Future]]]:
    """The runs the selected tests of this module compare, started two at a time in the background as
    soon as the data exist, in the order the tests read them: the tests before ran them one after
    another, with a core idle while a 1-rank run trained or a 2-rank run's ranks waited on each other.
    Yields the runs' parent folder and, per run, a future of (the CLI's result, its seconds)."""
    jobs = _run_jobs(post_data)
    wanted = dict.fromkeys(run for item in request.session.items if item.module is request.module
                           for run in _needed_runs(item))
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(_timed_run, jobs[name]) for name in wanted}
    yield post_data["root"], futures
    pool.shutdown(wait=True, cancel_futures=True)


def _done(runs, name: str) -> Path:
    """The run folder of a finished, successful run."""
    root, futures = runs
    result, _ = futures[name].result()
    assert result.returncode == 0, result.stdout + result.stderr
    return root / name


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sft_two_rank_layouts_match_one_rank(post_data, runs, layout):
    root = post_data["root"]
    records = read_metrics(root / "sft1")
    assert len(records) == STEPS and all(r["loss_tokens"] > 0 for r in records)
    _done(runs, f"sft2{layout}")
    assert _losses(root / f"sft2{layout}") == pytest.approx(post_data["sft_losses"], rel=2e-5, abs=1e-6)
    assert [r["loss_tokens"] for r in read_metrics(root / f"sft2{layout}")] == [r["loss_tokens"] for r in records]


def test_packed_sft_under_pipeline_parallelism_matches_one_rank(post_data, runs):
    """Every stage gets the rows' document ids, so each builds the same block mask and positions."""
    root = post_data["root"]
    one, two = (read_metrics(_done(runs, name)) for name in ("sftpack1", "sftpack2pp"))
    # packed rows hold several examples: more loss tokens per step than one example per row
    assert one[0]["loss_tokens"] > read_metrics(root / "sft1")[0]["loss_tokens"]
    assert [r["loss_tokens"] for r in two] == [r["loss_tokens"] for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=2e-5, abs=1e-6)


def test_dpo_starts_at_ln2(runs):
    first = read_metrics(_done(runs, "dpo_live1"))[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6) and first["reward_margin"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in ("pp-precomputed", "ddp", "hsdp") else c
                                  for c in DPO_LAYOUTS])  # precomputed = live is shown on 1 rank in CI; DDP is FSDP2's
# simpler sibling; HSDP (2 x 2 ranks) is FSDP2 inside DDP and costs a 4-rank launch
def test_dpo_two_rank_layouts_match_one_rank(post_data, runs, case):
    """Losses and every DPO metric (rewards, accuracy, margin, log-probs) of a 2-rank run equal 1 rank's.
    Under pipeline parallelism the live reference runs as its own pipeline of the policy's stages;
    the precomputed one is computed through that pipeline, and equals the 1-rank cache."""
    reference = DPO_LAYOUTS[case][1]
    root = post_data["root"]
    ones = read_metrics(_done(runs, "dpo_live1"))
    twos = read_metrics(_done(runs, f"dpo_2{case}"))
    for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin", "logps_chosen", "logps_rejected"):
        assert [r[key] for r in twos] == pytest.approx([r[key] for r in ones], rel=2e-5, abs=1e-5), key
    # accuracy counts chosen > rejected: at the first step policy = reference, every pair is a tie to
    # rounding, and another summation order may break ties the other way
    decided = [i for i, r in enumerate(ones) if abs(r["reward_margin"]) > 1e-4]
    assert len(decided) >= len(ones) - 1
    assert [twos[i]["reward_accuracy"] for i in decided] == [ones[i]["reward_accuracy"] for i in decided]
    if reference == "precomputed":
        _done(runs, "dpo_pre")
        with np.load(root / "refcache.npz") as one_rank, np.load(root / f"refcache_{case}.npz") as pipelined:
            np.testing.assert_allclose(pipelined["logps"], one_rank["logps"], rtol=1e-5, atol=1e-5)
            assert pipelined["key"] == one_rank["key"]


def test_precomputed_reference_matches_live_and_a_stale_cache_is_refused(post_data, runs):
    root = post_data["root"]
    live, pre = _losses(_done(runs, "dpo_live1")), _losses(_done(runs, "dpo_pre"))
    assert (root / "refcache.npz").is_file()
    assert pre[:5] == pytest.approx(live[:5], rel=1e-6, abs=1e-6)

    cache = root / "stale.npz"
    with np.load(root / "refcache.npz") as saved:
        np.savez(cache, key=saved["key"], logps=saved["logps"] * 1.01)  # a cache gone stale
    stale = _dpo_config(post_data, "dpo_stale", reference="precomputed", reference_cache=str(cache))
    result = run_cli("train", "--config", stale)
    assert result.returncode == 2, result.stderr
    assert "stale reference log-prob cache" in result.stderr and "Traceback" not in result.stderr


def test_sigkill_and_resume_give_identical_losses(post_data, runs):
    root = post_data["root"]
    live = _done(runs, "dpo_live1")
    config = _dpo_config(post_data, "dpo_killed", reference="live")
    proc = subprocess.Popen([str(BIN / "auroragpt"), "train", "--config", str(config)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = root / "dpo_killed" / "checkpoints" / "step_00000004"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "dpo_killed" / "checkpoints" / f"step_{STEPS:08d}").exists(), "the run ended before the kill"
    result = run_cli("train", "--config", config)
    assert result.returncode == 0, result.stderr
    assert _losses(root / "dpo_killed") == _losses(live)


def test_synthetic_preference_task_reaches_reward_accuracy_above_0_9(post_data, runs):
    run = _done(runs, "dpo_learn")
    assert runs[1]["dpo_learn"].result()[1] < 120  # its own seconds, shared with one other run at most
    accuracy = [r["reward_accuracy"] for r in read_metrics(run)]
    assert accuracy[0] < 0.9 and np.mean(accuracy[-3:]) > 0.9, accuracy


SCORER = ("import sys, json\n"
          "for line in sys.stdin:\n"
          "    r = json.loads(line)\n"
          "    print(float(r['prompt'].split()[-1] in r['completion']))\n")


def test_post_iterate_runs_resumable_rounds(post_data):
    """Two rounds of generate -> score (a command) -> pairs -> DPO; a rerun redoes nothing."""
    root = post_data["root"]
    write_jsonl(root / "prompts.jsonl", [{"prompt": r["prompt"]} for r in preference_records(8, seed=5)])
    (root / "scorer.py").write_text(SCORER)
    config = _dpo_config(post_data, "iterate_base", reference="live")
    args = ("post", "iterate", "--config", config, "--prompts", root / "prompts.jsonl", "--out", root / "rounds",
            "--rounds", "2", "--samples", "4", "--max-new-tokens", "6", "--scorer-command", f"{BIN / 'python'} {root / 'scorer.py'}",
            "--set", "train.steps=2", "--set", "checkpoint.every=0")
    result = run_cli(*args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    first = json.loads((root / "rounds" / "round_00" / "round.json").read_text())
    second = json.loads((root / "rounds" / "round_01" / "round.json").read_text())
    assert first["policy"] == str(post_data["init"]) and second["policy"] == first["result"]
    assert Path(second["result"]).is_dir() and first["pairs"] > 0
    pairs = [json.loads(x) for x in (root / "rounds" / "round_00" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["prompt"].split()[-1] in p["chosen"] and p["prompt"].split()[-1] not in p["rejected"] for p in pairs)
    mtime = (root / "rounds" / "round_01" / "round.json").stat().st_mtime_ns
    again = run_cli(*args, timeout=120)
    assert again.returncode == 0 and "round 1: mean score" in again.stdout
    assert (root / "rounds" / "round_01" / "round.json").stat().st_mtime_ns == mtime
