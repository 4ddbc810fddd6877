"""Which documents are near or exact duplicates, given their signatures (no files involved).

Keep rule (both indexes): documents are taken in input order, and a document is removed when an
earlier *kept* document is its duplicate; the first of every group therefore stays. With the LSH
index, documents sharing a band are candidates and a candidate pair counts only when the exact
Jaccard similarity of their n-gram sets reaches the threshold (so precision does not hinge on the
signature's estimate). With the Bloom index (LSHBloom), a band already seen is a duplicate, without
verification: a few bytes per document and band, for corpora whose band tables do not fit.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from auroragpt.data.curate.minhash import (
    BloomBands,
    MinHashSettings,
    band_keys,
    candidate_pairs,
    jaccard,
    shingle_sets,
    signatures,
)


def exact_duplicates(digests: np.ndarray) -> np.ndarray:
    """For every document, the index of the first document with the same digest (itself if none)."""
    if digests.shape[0] == 0:
        return np.zeros(0, np.int64)
    keys = np.ascontiguousarray(digests).view(f"V{digests.shape[1]}").ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype(np.int64)


def near_duplicates(
    sigs: np.ndarray,
    active: np.ndarray,
    settings: MinHashSettings,
    shingles_of: Callable[[np.ndarray], dict[int, np.ndarray]],
    index: str = "lsh",
) -> tuple[np.ndarray, np.ndarray]:
    """(keeper, score): keeper[i] is the kept duplicate of removed document i, else -1; score its Jaccard.

    `active` masks the documents taking part; `shingles_of(indices)` returns their n-gram hashes
    (called once, for the candidates only).
    """
    if index == "bloom":  # a Bloom filter cannot name the kept duplicate: keeper -2
        keeper = np.where(bloom_duplicates([(sigs, active)], int(active.sum()), settings), -2, -1)
        return keeper.astype(np.int64), np.full(sigs.shape[0], np.nan)
    bands, _ = settings.banding(verified=True)
    edges, sims = verified_edges(sigs, active, settings, shingles_of, range(bands))
    return keep_first(sigs.shape[0], edges, sims)


def verified_edges(
    sigs: np.ndarray, active: np.ndarray, settings: MinHashSettings,
    shingles_of: Callable[[np.ndarray], dict[int, np.ndarray]], band_ids: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """((m, 2) pairs i < j, their Jaccard) of active documents sharing one of the bands `band_ids`
    whose exact Jaccard reaches the threshold. Ranks can split the bands and merge the edges."""
    ids = np.flatnonzero(active)
    bands, rows = settings.banding(verified=True)
    band_ids = [b for b in band_ids if 0 <= b < bands]
    if ids.size < 2 or not band_ids:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    keys = band_keys(sigs[ids], bands, rows, band_ids)
    pairs = ids[candidate_pairs(keys)]
    if pairs.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    sets = shingles_of(np.unique(pairs))
    sims = np.fromiter((jaccard(sets[int(i)], sets[int(j)]) for i, j in pairs), float, count=len(pairs))
    ok = sims >= settings.threshold
    return pairs[ok], sims[ok]


def keep_first(n: int, edges: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keep rule over verified edges: in input order, a document is removed when an earlier
    kept document is its duplicate (the most similar such one is named). Edges may repeat."""
    keeper = np.full(n, -1, np.int64)
    score = np.full(n, np.nan)
    if edges.size == 0:
        return keeper, score
    edges, first = np.unique(edges, axis=0, return_index=True)
    sims = sims[first]
    order = np.lexsort((edges[:, 0], edges[:, 1]))  # by later document, then earlier
    for (i, j), w in zip(edges[order], sims[order]):
        if keeper[i] == -1 and (keeper[j] == -1 or w > score[j]):  # i is kept (decided: i < j)
            keeper[j], score[j] = i, w
    return keeper, score


def bloom_duplicates(blocks: Iterable[tuple[np.ndarray, np.ndarray]], capacity: int,
                     settings: MinHashSettings) -> np.ndarray:
    """LSHBloom over (signatures, active mask) blocks in input order: a document whose band is
    already in that band's filter is removed, the others are inserted. Blocks (shards) stream, so
    memory is the filters (~`capacity` x 27 B at 0.8) plus one block. Returns the removed mask."""
    bands, rows = settings.banding(verified=False)
    bloom = BloomBands(bands, capacity)
    out = []
    for sigs, active in blocks:
        removed = np.zeros(sigs.shape[0], bool)
        ids = np.flatnonzero(active)
        keys = band_keys(sigs[ids], bands, rows)
        for local, doc in enumerate(ids):
            removed[doc] = bloom.seen_then_add(keys[local])
        out.append(removed)
    return np.concatenate(out) if out else np.zeros(0, bool)


def dedup_texts(texts: list[str], settings: MinHashSettings, index: str = "lsh",
                batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """`near_duplicates` of in-memory texts (benchmarks, tests, notebooks). Signatures are made
    `batch` documents at a time, and n-grams are recomputed for the candidates only, so memory
    is the signatures plus one batch."""
    sigs = np.concatenate([signatures(texts[lo:lo + batch], settings) for lo in range(0, len(texts), batch)]
                          or [np.zeros((0, settings.num_perm), np.uint32)])
    active = ~(sigs == 0xFFFFFFFF).all(axis=1)

    def shingles_of(idx: np.ndarray) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for lo in range(0, idx.size, batch):
            part = idx[lo:lo + batch]
            shingles, per_doc = shingle_sets([texts[i] for i in part], settings.ngram)
            ends = np.cumsum(per_doc)
            found.update({int(i): shingles[e - c:e] for i, e, c in zip(part, ends, per_doc)})
        return found

    return near_duplicates(sigs, active, settings, shingles_of, index)
