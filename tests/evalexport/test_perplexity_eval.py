"""Validation perplexity per corpus equals a direct computation, on one rank and on two."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evalexport_models import make_model

from auroragpt.cli import main
from auroragpt.model.io import save_model

SEQ_LEN, NUM_SAMPLES, SEED, VALID_FRACTION = 24, 24, 11, 0.25


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two small corpora of random documents and a data-file-list over them."""
    from auroragpt.data.indexed import IndexedDatasetWriter

    root = tmp_path_factory.mktemp("ppl")
    rng = np.random.default_rng(0)
    lines = []
    for name, weight, low, high in (("prose", 0.6, 0, 160), ("code", 0.4, 160, 320)):
        with IndexedDatasetWriter(root / name, np.uint16) as writer:
            for _ in range(40):
                writer.add_document(rng.integers(low, high, size=int(rng.integers(10, 60))))
        lines.append(f"{weight} {root / name} {name}")
    file_list = root / "files.txt"
    file_list.write_text("\n".join(lines) + "\n")
    model = make_model(seed=2, init_std=0.05)
    folder = save_model(model, root / "model")
    return file_list, model, folder


def _direct(model, file_list) -> dict[str, tuple[float, int]]:
    """Mean next-token loss per corpus over its own validation plan (every held-out window once:
    each corpus here holds fewer than NUM_SAMPLES), one sample at a time, in float64."""
    from auroragpt.data.blend import build_blend_plan
    from auroragpt.data.filelist import FileList, parse_file_list

    full = parse_file_list(file_list)
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for name in full.corpora:
            own = FileList(full.path, tuple(e for e in full.entries if e.corpus == name))
            probe = build_blend_plan(own, SEQ_LEN, NUM_SAMPLES, SEED, split="valid", valid_fraction=VALID_FRACTION)
            windows = probe.summary()[0].windows
            assert windows < NUM_SAMPLES
            plan = build_blend_plan(own, SEQ_LEN, windows, SEED, split="valid", valid_fraction=VALID_FRACTION)
            starts = {int(plan.locate_batch(np.array([i]))[1][0]) for i in range(windows)}
            assert len(starts) == windows  # distinct windows: the split is covered once
            for i in range(windows):
                tokens = torch.from_numpy(np.asarray(plan.sample(i), dtype=np.int64))
                assert tokens.shape == (SEQ_LEN + 1,)
                logprobs = F.log_softmax(model(tokens[None, :-1])[0].double(), dim=-1)
                nll = -logprobs.gather(-1, tokens[1:, None]).sum().item()
                acc = sums.setdefault(name, [0.0, 0])
                acc[0] += nll
                acc[1] += SEQ_LEN
    return {name: (total / count, count) for name, (total, count) in sums.items()}


def _cli_args(folder, file_list, out):
    return ["eval", str(folder), "--data-file-list", str(file_list), "--seq-len", str(SEQ_LEN),
            "--num-samples", str(NUM_SAMPLES), "--seed", str(SEED), "--valid-fraction", str(VALID_FRACTION),
            "--micro-batch", "5", "--output", str(out)]


def test_perplexity_matches_direct_computation(corpus, tmp_path):
    file_list, model, folder = corpus
    out = tmp_path / "ppl.json"
    assert main(_cli_args(folder, file_list, out)) == 0
    result = json.loads(out.read_text())["perplexity"]
    expected = _direct(model, file_list)
    assert set(expected) == set(result["corpora"]) == {"prose", "code"}
    for name, (loss, tokens) in expected.items():
        got = result["corpora"][name]
        assert got["tokens"] == tokens and tokens < NUM_SAMPLES * SEQ_LEN
        assert got["validation_epochs"] == 1.0  # every held-out window scored once
        assert got["loss"] == pytest.approx(loss, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    total_tokens = sum(t for _, t in expected.values())
    overall = sum(loss * t for loss, t in expected.values()) / total_tokens
    assert result["overall"]["tokens"] == total_tokens
    assert result["overall"]["loss"] == pytest.approx(overall, rel=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_give_the_single_rank_result(corpus, tmp_path):
    file_list, _, folder = corpus
    single = tmp_path / "one.json"
    assert main(_cli_args(folder, file_list, single)) == 0
    double = tmp_path / "two.json"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "AURORAGPT_DEVICE": "cpu", "AURORAGPT_BACKEND": "gloo"}
        procs.append(subprocess.Popen([sys.executable, "-m", "auroragpt.cli", *_cli_args(folder, file_list, double)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    one, two = (json.loads(p.read_text())["perplexity"] for p in (single, double))
    for name, entry in one["corpora"].items():
        assert two["corpora"][name]["tokens"] == entry["tokens"]
        assert two["corpora"][name]["samples"] == entry["samples"]
        if entry["loss"] is not None:
            assert two["corpora"][name]["loss"] == pytest.approx(entry["loss"], rel=1e-5)


def test_eval_defaults_to_the_split_the_checkpoint_was_trained_with():
    """A run trained with valid_fraction 0.002 must not be scored on 1% of documents (some trained on)."""
    from auroragpt.commands.eval import _training_data

    data = {"seed": 7, "valid_fraction": 0.002, "seq_len": 64}
    assert _training_data({"config": {"data": data}}) == data  # a DCP checkpoint's meta.json
    assert _training_data({"meta": {"config": {"data": data}}}) == data  # a model folder's config.json
    assert _training_data({"hf_folder": "x"}) == {}
