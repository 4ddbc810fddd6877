"""Compatibility with megatron-core's IndexedDataset in both directions, document by document."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from auroragpt.data.indexed import IndexedDataset, IndexedDatasetWriter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch = pytest.importorskip("torch")
    mcore = pytest.importorskip("megatron.core.datasets.indexed_dataset")


def random_docs(seed: int, n: int, high: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, rng.integers(1, 200)) for _ in range(n)]


@pytest.mark.parametrize("dtype,high", [(np.uint16, 65535), (np.int32, 150_000)])
def test_megatron_writes_we_read(tmp_path, dtype, high):
    prefix = str(tmp_path / "mc")
    docs = random_docs(2, 300, high)
    builder = mcore.IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for k, d in enumerate(docs):
        if k % 10 == 3:  # a document split into two sequences, as sentence splitting does
            cut = d.size // 2
            builder.add_item(torch.from_numpy(d[:cut].astype(np.int64)))
            builder.add_item(torch.from_numpy(d[cut:].astype(np.int64)))
        else:
            builder.add_item(torch.from_numpy(d.astype(np.int64)))
        builder.end_document()
    builder.finalize(prefix + ".idx")

    theirs = mcore.IndexedDataset(prefix)
    ours = IndexedDataset(prefix)
    assert ours.dtype == np.dtype(dtype)
    assert len(ours) == len(theirs) and ours.num_documents == len(docs)
    np.testing.assert_array_equal(ours.sequence_lengths, theirs.sequence_lengths)
    np.testing.assert_array_equal(ours.sequence_pointers, theirs.index.sequence_pointers)
    np.testing.assert_array_equal(ours.document_indices, theirs.document_indices)
    for i in range(len(theirs)):
        np.testing.assert_array_equal(ours.get(i), theirs[i])
    for k, d in enumerate(docs):
        joined = np.concatenate([ours.get(s) for s in ours.document_sequences(k)])
        np.testing.assert_array_equal(joined, d)


@pytest.mark.parametrize("dtype,high", [(np.uint16, 65535), (np.int32, 150_000)])
def test_we_write_megatron_reads(tmp_path, dtype, high):
    prefix = str(tmp_path / "ours")
    docs = random_docs(3, 300, high)
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for d in docs:
            writer.add_document(d)
    theirs = mcore.IndexedDataset(prefix)
    assert theirs.index.dtype == dtype and len(theirs) == len(docs)
    assert theirs.document_indices.tolist() == list(range(len(docs) + 1))
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(theirs[i], d)
        np.testing.assert_array_equal(theirs.get(i, offset=1, length=min(3, d.size - 1)), d[1 : 1 + min(3, d.size - 1)])
    # and a merged file is still readable by megatron
    from auroragpt.data.merge import merge_datasets

    merge_datasets([prefix, prefix], tmp_path / "twice")
    twice = mcore.IndexedDataset(str(tmp_path / "twice"))
    assert len(twice) == 2 * len(docs)
    np.testing.assert_array_equal(twice[len(docs) + 5], docs[5])
