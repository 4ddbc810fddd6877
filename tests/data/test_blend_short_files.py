"""A file shorter than one sample (fewer than seq_len+1 tokens) blends as megatron-core blends it:
read repeated, and drawn in proportion to its weight like every other file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from auroragpt.data.blend import build_blend_plan
from auroragpt.data.filelist import parse_file_list
from auroragpt.data.indexed import IndexedDatasetWriter

SEQ_LEN, SAMPLES = 32, 2000
# file -> (corpus, weight, document lengths); B holds 10 tokens, less than one sample of 33
FILES = {"A": ("web", 0.3, [400] * 10), "B": ("web", 0.2, [4, 6]), "C": ("code", 0.5, [300] * 10)}

MEGATRON = r"""
import json, logging, os, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import numpy as np
import torch.distributed as dist
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
prefixes, weights, seq_len, n, cache = json.loads(sys.argv[1])
os.makedirs(cache, exist_ok=True)
dist.init_process_group("gloo", init_method=f"file://{cache}/pg", rank=0, world_size=1)
class Tokenizer:
    vocab_size, eod, pad, eos = 10**6, 0, -1, 0
    special_tokens_dict = {}
    unique_identifiers = {"class": "TestTokenizer"}
config = GPTDatasetConfig(random_seed=1, sequence_length=seq_len, blend=(prefixes, weights), split="100,0,0",
                          tokenizer=Tokenizer(), reset_position_ids=False, reset_attention_mask=False,
                          eod_mask_loss=False, path_to_cache=cache, mmap_bin_files=True)
train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, config).build()
owner = np.asarray(train.dataset_index[:n])
short = [int(i) for i in np.flatnonzero(owner == 1)[:20]]
tokens = [train[i]["tokens"].tolist() + train[i]["labels"].tolist()[-1:] for i in short]
print(json.dumps({"counts": np.bincount(owner, minlength=len(prefixes)).tolist(), "short_tokens": tokens}))
"""


@pytest.fixture(scope="module")
def file_list(tmp_path_factory):
    root = tmp_path_factory.mktemp("short")
    lines = []
    for f, (name, (corpus, weight, docs)) in enumerate(FILES.items()):
        with IndexedDatasetWriter(root / name, np.int32) as writer:
            pos = 0
            for n in docs:
                writer.add_document(f * 100_000 + np.arange(pos, pos + n))  # values encode (file, position)
                pos += n
        lines.append(f"{weight} {root / name} {corpus}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return parse_file_list(root / "list.txt")


def test_short_file_repeats_and_keeps_its_weight(file_list):
    plan = build_blend_plan(file_list, SEQ_LEN, SAMPLES, seed=3, valid_fraction=0.0)
    files, starts = plan.locate_batch(np.arange(SAMPLES))
    counts = np.bincount(files, minlength=3)
    weights = np.array([w for _, w, _ in FILES.values()])
    assert np.abs(counts - weights * SAMPLES).max() <= 2, counts
    uses = np.flatnonzero(files == 1)
    tokens = plan.samples_batch(uses)
    assert tokens.shape == (len(uses), SEQ_LEN + 1)
    positions = tokens - 100_000
    assert ((positions >= 0) & (positions < 10)).all()  # only B's tokens ...
    assert (np.diff(positions, axis=1) % 10 == 1).all()  # ... read around its cycle
    # consecutive uses tile the repeated file: every token of B read equally often (within 1 + overlap)
    coverage = np.bincount(positions[:, :-1].ravel(), minlength=10)
    assert coverage.max() - coverage.min() <= 1, coverage
    # spans say the same: pieces of B's two documents, in reading order, adding up to the sample
    sample, span_file, doc, offset, length = plan.spans_batch(uses[:5])
    for row in range(5):
        mine = sample == row
        assert (span_file[mine] == 1).all() and length[mine].sum() == SEQ_LEN + 1
        pieces = [np.arange(o, o + n) + (4 if d == 1 else 0) for d, o, n in zip(doc[mine], offset[mine], length[mine])]
        assert np.array_equal(np.concatenate(pieces), positions[row])


def test_corpus_of_short_files_only_is_drawn_by_weight(tmp_path):
    lines = []
    for f, (weight, size) in enumerate([(0.9, 5), (0.1, 7)]):
        with IndexedDatasetWriter(tmp_path / f"s{f}", np.int32) as writer:
            writer.add_document(np.arange(size))
        lines.append(f"{weight} {tmp_path / f's{f}'} tiny")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    plan = build_blend_plan(parse_file_list(tmp_path / "list.txt"), 16, 1000, valid_fraction=0.0)
    files, _ = plan.locate_batch(np.arange(1000))
    assert np.bincount(files).tolist() == [900, 100]


def test_same_counts_as_megatron_core(file_list, tmp_path):
    pytest.importorskip("megatron.core")
    prefixes = [e.prefix for e in file_list.entries]
    weights = [e.weight for e in file_list.entries]
    arg = json.dumps([prefixes, weights, SEQ_LEN, SAMPLES, str(tmp_path / "cache")])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MEGATRON, arg], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    plan = build_blend_plan(file_list, SEQ_LEN, SAMPLES, seed=1, valid_fraction=0.0)
    files, _ = plan.locate_batch(np.arange(SAMPLES))
    ours = np.bincount(files, minlength=3)
    assert np.abs(ours - np.array(theirs["counts"])).max() <= 2, (ours, theirs["counts"])
    # megatron-core's samples of B are B's tokens repeated, as ours are
    for tokens in theirs["short_tokens"]:
        assert len(tokens) == SEQ_LEN + 1 and all(100_000 <= t < 100_010 for t in tokens)
