"""Writer → reader round trips of random documents, and the writer's atomic behaviour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from auroragpt.data.indexed import (
    IndexedDataset,
    IndexedDatasetWriter,
    dtype_for_vocab,
    read_index_header,
)
from auroragpt.errors import DataError


def random_docs(seed: int, n: int, high: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, rng.integers(0, 300)) for _ in range(n)]


@pytest.mark.parametrize("dtype,high", [(np.uint16, 65535), (np.int32, 200_000)])
def test_round_trip_random_documents(tmp_path, dtype, high):
    docs = random_docs(1, 500, high)
    with IndexedDatasetWriter(tmp_path / "ds", dtype) as writer:
        for d in docs[:200]:
            writer.add_document(d)
        flat = np.concatenate(docs[200:])
        writer.add_documents(flat, np.array([d.size for d in docs[200:]]))
    ds = IndexedDataset(str(tmp_path / "ds") + ".bin")
    assert ds.dtype == np.dtype(dtype) and len(ds) == 500 and ds.num_documents == 500
    assert ds.num_tokens == sum(d.size for d in docs)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ds.get(i), d)
    np.testing.assert_array_equal(ds.get(7, offset=3, length=5), docs[7][3:8])
    stream = np.concatenate(docs)
    np.testing.assert_array_equal(ds.read_tokens(100, 1000), stream[100:1100])
    np.testing.assert_array_equal(ds.document_indices, np.arange(501))
    header = read_index_header(tmp_path / "ds.idx")
    assert (header.dtype, header.num_sequences, header.num_documents) == (np.dtype(dtype), 500, 500)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.get(499), docs[499])
    ds.validate()


def test_multi_sequence_documents_and_empty_dataset(tmp_path):
    with IndexedDatasetWriter(tmp_path / "multi", np.uint16) as writer:
        writer.add_document(np.arange(10), sequence_lengths=[3, 7])
        writer.add_document([])
        writer.add_document([5, 6])
    ds = IndexedDataset(tmp_path / "multi")
    assert len(ds) == 4 and ds.num_documents == 3
    assert list(ds.document_sequences(0)) == [0, 1] and list(ds.document_sequences(2)) == [3]
    np.testing.assert_array_equal(ds.get(1), np.arange(3, 10))
    with IndexedDatasetWriter(tmp_path / "empty", np.uint16):
        pass
    empty = IndexedDataset(tmp_path / "empty")
    assert len(empty) == 0 and empty.num_tokens == 0


def test_writer_is_atomic_and_discards_on_error(tmp_path):
    writer = IndexedDatasetWriter(tmp_path / "ds", np.uint16)
    writer.add_document([1, 2, 3])
    assert not (tmp_path / "ds.bin").exists() and not (tmp_path / "ds.idx").exists()
    writer.finalize()
    assert (tmp_path / "ds.bin").exists() and (tmp_path / "ds.idx").exists()
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(tmp_path / "other", np.uint16) as w:
            w.add_document([1])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.bin", "ds.idx"]


def test_token_ids_that_do_not_fit_are_refused(tmp_path):
    assert dtype_for_vocab(65535) == np.uint16 and dtype_for_vocab(65536) == np.int32
    with pytest.raises(DataError, match="does not fit uint16"):
        with IndexedDatasetWriter(tmp_path / "ds", np.uint16) as writer:
            writer.add_document([1, 70000])
    assert not list(tmp_path.iterdir())
