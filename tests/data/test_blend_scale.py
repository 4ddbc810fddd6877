"""Scale test (slow): a blend plan for 2e11 tokens over 1,000 files at S=4096, as bench/blend.py
generates them (real index files, sparse .bin files), checked for what the README promises at
scale: built in seconds with O(files) memory; every corpus within 2 samples of weight x window
for global batches, and within 2 + window/2**20 for the whole run; samples inside their files;
every file of a corpus used in proportion to its size. Run with `make test PYTEST_ARGS="-m slow"`
(~3 GB of index files; `bench/blend.py --tokens 2e12 --files 2419` goes to 2T tokens)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from auroragpt.data.blend import build_blend_plan
from auroragpt.data.filelist import parse_file_list

TOKENS, FILES, CORPORA, SEQ_LEN = 2e11, 1000, 10, 4096
BENCH = Path(__file__).resolve().parents[2] / "bench" / "blend.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_blend", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_blend_plan_at_scale(tmp_path):
    list_path = _bench().generate(tmp_path / "data", TOKENS, FILES, CORPORA, seed=1)
    file_list = parse_file_list(list_path)
    num_samples = int(TOKENS // SEQ_LEN)
    plan = build_blend_plan(file_list, SEQ_LEN, num_samples, seed=1234)
    assert plan.build_seconds < 60, plan.build_seconds
    assert plan.memory_bytes() < 64 * 2**20  # O(files + 2**20 schedule), not O(samples)
    # the whole run, longer than 2**20/(K-1) samples: within 2 + samples/2**20 of weight x samples
    for s in plan.summary():
        assert abs(s.samples - s.weight * num_samples) < 2 + num_samples / 2**20, (s.name, s.samples, s.weight)
    # global batches anywhere in the run: each corpus within 2 of weight x batch
    rng = np.random.default_rng(0)
    for start in rng.integers(0, num_samples - 4096, 200).tolist():
        owner = plan.corpus_of_batch(np.arange(start, start + 4096))
        counts = np.bincount(owner, minlength=len(plan.corpus_names))
        assert (np.abs(counts - plan.corpus_weights * 4096) < 2).all(), (start, counts)
    # samples lie inside their files; files of a corpus are used in proportion to their size
    idx = rng.integers(0, num_samples, 2_000_000)
    files, starts = plan.locate_batch(idx)
    assert (starts >= plan.token_begin[files]).all() and (starts + SEQ_LEN + 1 <= plan.token_end[files]).all()
    share = np.bincount(files, minlength=len(file_list.entries)) / len(idx)
    size = (plan.token_end - plan.token_begin) / (plan.token_end - plan.token_begin).sum()
    assert np.abs(share - size).max() < 0.002, np.abs(share - size).max()
