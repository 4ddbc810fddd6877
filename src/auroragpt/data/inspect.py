"""What is in an indexed dataset: counts, length percentiles, dtype, and a document decoded."""

from __future__ import annotations

import os

import numpy as np

from auroragpt.data.indexed import IndexedDataset
from auroragpt.errors import DataError

PERCENTILES = (0, 1, 10, 50, 90, 99, 100)


def dataset_summary(prefix: str | os.PathLike) -> dict:
    """Counts and document-length statistics (lengths in tokens, end-of-document included)."""
    ds = IndexedDataset(prefix)
    ds.validate()
    # Tokens per document: differences of the running token count at document boundaries.
    cumulative = np.concatenate([[0], np.cumsum(ds.sequence_lengths, dtype=np.int64)])
    lengths = cumulative[ds.document_indices[1:]] - cumulative[ds.document_indices[:-1]]
    summary = {
        "prefix": ds.prefix,
        "dtype": ds.dtype.name,
        "documents": ds.num_documents,
        "sequences": len(ds),
        "tokens": ds.num_tokens,
        "bin_bytes": os.path.getsize(ds.bin_path),
        "idx_bytes": os.path.getsize(ds.idx_path),
        "mean_length": float(lengths.mean()) if lengths.size else 0.0,
        "length_percentiles": {},
    }
    if lengths.size:
        values = np.percentile(lengths, PERCENTILES, method="nearest")
        summary["length_percentiles"] = {f"p{p}": int(v) for p, v in zip(PERCENTILES, values)}
    return summary


def document_tokens(prefix: str | os.PathLike, doc: int) -> np.ndarray:
    """All tokens of document `doc` (its sequences joined)."""
    ds = IndexedDataset(prefix)
    if not -ds.num_documents <= doc < ds.num_documents:
        raise DataError(f"{ds.prefix}: document {doc} out of range (the dataset has {ds.num_documents})")
    doc %= ds.num_documents
    seqs = [ds.get(s) for s in ds.document_sequences(doc)]
    return np.concatenate(seqs) if seqs else np.empty(0, ds.dtype)


def format_summary(summary: dict) -> str:
    lines = [
        f"dataset     {summary['prefix']}",
        f"dtype       {summary['dtype']}",
        f"documents   {summary['documents']:,}",
        f"sequences   {summary['sequences']:,}",
        f"tokens      {summary['tokens']:,}",
        f"files       .bin {summary['bin_bytes']:,} bytes, .idx {summary['idx_bytes']:,} bytes",
        f"mean length {summary['mean_length']:.1f} tokens",
    ]
    if summary["length_percentiles"]:
        pct = "  ".join(f"{k}={v:,}" for k, v in summary["length_percentiles"].items())
        lines.append(f"length      {pct}")
    return "\n".join(lines)
