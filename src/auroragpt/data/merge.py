"""Concatenate indexed datasets without re-tokenizing, optionally in a seeded random document order."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from auroragpt.data.indexed import IndexedDataset, IndexedDatasetWriter, dataset_exists, split_prefix
from auroragpt.errors import DataError

_SHUFFLE_BLOCK = 16384  # documents gathered per write while shuffling


def write_shuffled(datasets: Sequence[IndexedDataset], writer: IndexedDatasetWriter, seed: int) -> None:
    """Write every document of `datasets` in the order of a permutation drawn from `seed`."""
    counts = np.array([ds.num_documents for ds in datasets], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    order = np.random.default_rng(seed).permutation(int(starts[-1]))
    simple = [len(ds) == ds.num_documents for ds in datasets]  # one sequence per document
    for block_start in range(0, order.size, _SHUFFLE_BLOCK):
        block = order[block_start : block_start + _SHUFFLE_BLOCK]
        which = np.searchsorted(starts, block, side="right") - 1
        pieces, lengths = [], []
        for global_doc, k in zip(block.tolist(), which.tolist()):
            ds, doc = datasets[k], global_doc - int(starts[k])
            if simple[k]:
                pieces.append(ds.get(doc))
                lengths.append(pieces[-1].size)
                continue
            if pieces:  # flush the batch so documents keep their order
                writer.add_documents(np.concatenate(pieces), np.array(lengths))
                pieces, lengths = [], []
            seqs = [ds.get(s) for s in ds.document_sequences(doc)]
            tokens = np.concatenate(seqs) if seqs else np.empty(0, ds.dtype)
            writer.add_document(tokens, [s.size for s in seqs])
        if pieces:
            writer.add_documents(np.concatenate(pieces), np.array(lengths))


def merge_datasets(
    prefixes: Sequence[str | os.PathLike],
    out_prefix: str | os.PathLike,
    *,
    shuffle_seed: int | None = None,
    overwrite: bool = False,
) -> IndexedDataset:
    """Write `out_prefix` holding the documents of every input, in order (or shuffled with a seed)."""
    if not prefixes:
        raise DataError("nothing to merge: no input datasets given")
    out = split_prefix(out_prefix)
    if dataset_exists(out) and not overwrite:
        raise DataError(f"{out}: output dataset already exists", hint="pick another prefix or pass --force")
    inputs = [split_prefix(p) for p in prefixes]
    if out in inputs:
        raise DataError(f"{out}: the output is also an input")
    datasets = [IndexedDataset(p) for p in inputs]
    dtypes = {ds.dtype for ds in datasets}
    if len(dtypes) > 1:
        listing = ", ".join(f"{ds.prefix} ({ds.dtype.name})" for ds in datasets)
        raise DataError(
            f"cannot merge datasets with different token dtypes: {listing}",
            hint="merge only datasets tokenized with the same tokenizer",
        )
    with IndexedDatasetWriter(out, datasets[0].dtype) as writer:
        if shuffle_seed is None:
            for ds in datasets:
                writer.add_dataset(ds)
        else:
            for ds in datasets:
                ds.validate()
            write_shuffled(datasets, writer, shuffle_seed)
    return IndexedDataset(out)
