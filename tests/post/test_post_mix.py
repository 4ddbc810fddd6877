"""data.file_list weights for SFT/DPO data mean what they mean in pretraining: a file of weight 0.3
gives 30% of the samples, spread evenly over the run; every epoch of a file shows each of its
examples once; any sample is found in closed form, so a resumed run reads the same samples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from auroragpt.data.examples import build_example_plan
from post_fixtures import chat_records, write_jsonl


@pytest.fixture(scope="module")
def two_files(tmp_path_factory, tokenizer_path):
    """A small (12 examples) and a large (40 examples) chat file, listed with weights 0.3 / 0.7."""
    from auroragpt.data.tokenize import tokenize_corpora

    root = tmp_path_factory.mktemp("mix")
    for name, n in (("small", 12), ("large", 40)):
        write_jsonl(root / f"{name}.jsonl", chat_records(n, seed=n))
        tokenize_corpora([root / f"{name}.jsonl"], root / name, tokenizer_path, fmt="chat", workers=1)
    (root / "list.txt").write_text(f"0.3 {root / 'small'} small\n0.7 {root / 'large'} large\n")
    return root / "list.txt"


def _plan(file_list, samples: int, pack: bool = False):
    cfg = SimpleNamespace(data=SimpleNamespace(file_list=str(file_list), seq_len=32, global_batch=samples, seed=7),
                          train=SimpleNamespace(objective="sft"), post=SimpleNamespace(pack=pack))
    return build_example_plan(cfg, steps=1)


@pytest.mark.parametrize("pack", [False, True])
def test_file_list_weights_give_the_mix_evenly_and_every_epoch_covers_each_file(two_files, pack):
    n = 600
    plan = _plan(two_files, n, pack)
    files = np.array([plan.file_of(i) for i in range(n)])
    units = np.array([plan.example_of(i) for i in range(n)])
    small = files == 0
    assert abs(small.sum() - 0.3 * n) <= 2  # the small file is 12/52 of the examples, but 30% of the samples
    for start in range(0, n - 50, 7):  # and so is every window of the run, within 2 samples
        assert abs(small[start:start + 50].sum() - 0.3 * 50) <= 2.5
    for f in (0, 1):
        begin, end = int(plan.unit_starts[f]), int(plan.unit_starts[f + 1])
        mine = units[files == f]
        assert ((mine >= begin) & (mine < end)).all()
        size = end - begin
        for e in range(len(mine) // size):  # each epoch of a file is a permutation of its units
            assert sorted(mine[e * size:(e + 1) * size].tolist()) == list(range(begin, end))
        assert len({tuple(mine[e * size:(e + 1) * size]) for e in range(len(mine) // size)}) > 1  # fresh orders
    # closed form: a new plan (a resumed run) reading samples in another order finds the same ones
    again = _plan(two_files, n, pack)
    for i in np.random.default_rng(0).permutation(n)[:100].tolist():
        assert again.example_of(i) == units[i] and again.file_of(i) == files[i]
    rows = again.samples_batch(np.arange(40, 44))
    assert np.array_equal(rows, plan.samples_batch(np.arange(40, 44)))
