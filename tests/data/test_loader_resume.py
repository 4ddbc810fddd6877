"""The loader: disjoint covering rank shares, int64 [micro, S+1] batches, workers, exact resume;
and the plan's determinism across processes with different Python hash seeds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from auroragpt.data.blend import build_blend_plan
from auroragpt.data.filelist import parse_file_list
from auroragpt.data.indexed import IndexedDatasetWriter
from auroragpt.data.loader import build_loader
from auroragpt.errors import ConfigError

SEQ, MICRO, GLOBAL = 16, 2, 8


@pytest.fixture(scope="module")
def list_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(1)
    lines = []
    for f, corpus in enumerate(["a", "a", "b"]):
        prefix = root / f"ds{f}"
        with IndexedDatasetWriter(prefix, np.uint16) as writer:
            for _ in range(20):
                writer.add_document(rng.integers(0, 60000, int(rng.integers(5, 80))))
        lines.append(f"{f + 1} {prefix} {corpus}")
    path = root / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def plan(list_path):
    return build_blend_plan(parse_file_list(list_path), SEQ, 96, seed=11)


def collect(loader, limit=None):
    out = []
    for batch in loader:
        out.append(batch.clone())
        if limit is not None and len(out) == limit:
            break
    return out


def test_rank_shares_are_disjoint_int64_and_cover_each_global_batch(plan):
    per_rank = [collect(build_loader(plan, r, 2, MICRO, GLOBAL)) for r in range(2)]
    micro_per_batch = GLOBAL // (2 * MICRO)
    assert all(len(b) == len(plan) // GLOBAL * micro_per_batch for b in per_rank)
    for batch in per_rank[0]:
        assert batch.dtype == torch.int64 and batch.shape == (MICRO, SEQ + 1)
    expected = torch.from_numpy(plan.samples_batch(np.arange(len(plan))))
    for g in range(len(plan) // GLOBAL):
        rows = [torch.cat(per_rank[r][g * micro_per_batch : (g + 1) * micro_per_batch]) for r in range(2)]
        assert torch.equal(torch.cat(rows), expected[g * GLOBAL : (g + 1) * GLOBAL])


def test_resume_yields_exactly_the_uninterrupted_batches(plan):
    full = collect(build_loader(plan, 1, 2, MICRO, GLOBAL))
    first = build_loader(plan, 1, 2, MICRO, GLOBAL)
    head = collect(first, limit=5)
    state = first.state_dict()
    assert state == {"consumed_samples": 5 * MICRO * 2}
    resumed = build_loader(plan, 1, 2, MICRO, GLOBAL)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full) - 5
    tail = collect(resumed)
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full)) and len(head + tail) == len(full)
    again = collect(build_loader(plan, 1, 2, MICRO, GLOBAL, start_sample=state["consumed_samples"]))
    assert all(torch.equal(a, b) for a, b in zip(again, tail))


def test_worker_processes_give_the_same_batches(plan):
    ref = collect(build_loader(plan, 0, 1, MICRO, GLOBAL), limit=6)
    got = collect(build_loader(plan, 0, 1, MICRO, GLOBAL, num_workers=2), limit=6)
    assert all(torch.equal(a, b) for a, b in zip(ref, got)) and len(got) == 6


def test_bad_loader_settings(plan):
    with pytest.raises(ConfigError, match="not a multiple"):
        build_loader(plan, 0, 3, MICRO, GLOBAL)
    with pytest.raises(ConfigError, match="outside"):
        build_loader(plan, 2, 2, MICRO, GLOBAL)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        build_loader(plan, 0, 1, MICRO, 1024)
    loader = build_loader(plan, 0, 2, MICRO, GLOBAL)
    with pytest.raises(ConfigError, match="cannot resume"):
        loader.load_state_dict({"consumed_samples": 3})


DIGEST = """
import hashlib, sys, numpy as np
from auroragpt.data.blend import build_blend_plan
from auroragpt.data.filelist import parse_file_list
plan = build_blend_plan(parse_file_list(sys.argv[1]), 16, 5000, seed=99, valid_fraction=0.1)
files, starts = plan.locate_batch(np.arange(len(plan)))
h = hashlib.sha256(files.tobytes() + starts.tobytes() + plan.samples_batch(np.arange(0, 5000, 37)).tobytes())
print(h.hexdigest())
"""


def test_same_plan_in_processes_with_different_hash_seeds(list_path):
    digests = []
    for hash_seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", DIGEST, str(list_path)], env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        digests.append(out.stdout.strip())
    plan = build_blend_plan(parse_file_list(list_path), 16, 5000, seed=99, valid_fraction=0.1)
    files, starts = plan.locate_batch(np.arange(len(plan)))
    here = hashlib.sha256(files.tobytes() + starts.tobytes() + plan.samples_batch(np.arange(0, 5000, 37)).tobytes())
    assert digests[0] == digests[1] == here.hexdigest()
    other = build_blend_plan(parse_file_list(list_path), 16, 5000, seed=100, valid_fraction=0.1)
    assert not np.array_equal(other.locate_batch(np.arange(5000))[1], starts)


def test_blend_command_prints_the_mix(list_path, capsys):
    from auroragpt.cli import main

    assert main(["data", "blend", str(list_path), "--seq-len", "16", "--tokens", "4000", "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "achieved" in out and "epochs" in out and "built in" in out and "sample 3" in out
    assert main(["data", "blend", str(list_path) + ".nope", "--seq-len", "16", "--tokens", "10"]) == 2
