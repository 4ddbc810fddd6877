"""MinHash signatures over word n-grams, LSH banding, and an LSHBloom-style Bloom-filter index.

Signatures are computed for a batch of documents at once: every n-gram hash x goes through a
fixed, seeded family of multiply-add-shift permutations ((a_k x + b_k) mod 2**64) >> 32 and the
minimum per document and permutation is taken with `np.minimum.reduceat`. The family depends only
on (num_perm, seed), so signatures agree across processes, ranks and runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from auroragpt.data.curate.normalize import mix64, ngram_hashes, word_hashes

_BLOCK_CELLS = 1 << 19  # n-grams x permutations per block: a 4 MiB temporary that stays in cache


@dataclass(frozen=True)
class MinHashSettings:
    """What a signature means; two runs compare only when these agree."""

    num_perm: int = 128
    ngram: int = 3
    seed: int = 42
    threshold: float = 0.8
    bands: int = 0  # 0: chosen from the threshold (as datasketch does)
    rows: int = 0

    def banding(self, verified: bool = True) -> tuple[int, int]:
        """(bands, rows). Verified candidates (exact Jaccard afterwards) can afford false positives,
        so the banding leans to recall (missing weighs 19x a false candidate); unverified ones
        (the Bloom index) take datasketch's balanced choice."""
        if self.bands and self.rows:
            return self.bands, self.rows
        return optimal_banding(self.threshold, self.num_perm, 0.05 if verified else 0.5)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint64 coefficients of the permutation family; a is odd."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def shingle_sets(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(n-gram hashes of all documents, n-grams per document)."""
    hashes, counts = word_hashes(texts)
    return ngram_hashes(hashes, counts, ngram)


def signatures(texts: list[str], settings: MinHashSettings) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures; a document without words gets all 0xFFFFFFFF."""
    shingles, per_doc = shingle_sets(texts, settings.ngram)
    return signatures_of_shingles(shingles, per_doc, settings)


def signatures_of_shingles(shingles: np.ndarray, per_doc: np.ndarray, settings: MinHashSettings) -> np.ndarray:
    """Signatures from n-gram hashes laid out document after document (`per_doc` of each)."""
    a, b = permutations(settings.num_perm, settings.seed)
    a, b = a[:, None], b[:, None]
    doc_starts = np.cumsum(per_doc) - per_doc
    owners = np.flatnonzero(per_doc > 0)
    first = doc_starts[owners]  # where each non-empty document's n-grams begin
    mins = np.full((settings.num_perm, owners.size), 0xFFFFFFFF, dtype=np.uint64)
    block = max(1, _BLOCK_CELLS // settings.num_perm)
    buf = np.empty((settings.num_perm, block), np.uint64)
    for lo in range(0, shingles.size, block):
        x = shingles[lo:lo + block]
        m = buf[:, :x.size]
        with np.errstate(over="ignore"):  # (a x + b) mod 2**64, then the high 32 bits
            np.multiply(a, x[None, :], out=m)
            m += b
        m >>= np.uint64(32)
        # the documents this block touches, a contiguous run (the first may have begun earlier)
        i0 = int(np.searchsorted(first, lo, side="right")) - 1
        i1 = int(np.searchsorted(first, lo + x.size, side="left"))
        seg = np.maximum(first[i0:i1] - lo, 0)
        np.minimum(mins[:, i0:i1], np.minimum.reduceat(m, seg, axis=1), out=mins[:, i0:i1])
    out = np.full((per_doc.size, settings.num_perm), 0xFFFFFFFF, dtype=np.uint32)
    out[owners] = mins.T
    return out


def _false_positive(threshold: float, b: int, r: int) -> float:
    xs = np.linspace(0.0, threshold, 200)
    return float(np.trapezoid(1 - (1 - xs ** r) ** b, xs))


def _false_negative(threshold: float, b: int, r: int) -> float:
    xs = np.linspace(threshold, 1.0, 200)
    return float(np.trapezoid(1 - (1 - (1 - xs ** r) ** b), xs))


@functools.lru_cache(maxsize=64)
def optimal_banding(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + negative areas (datasketch's rule)."""
    best, best_err = (1, num_perm), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * _false_positive(threshold, b, r) + (1 - fp_weight) * _false_negative(threshold, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int, band_ids: Sequence[int] | None = None) -> np.ndarray:
    """(n, len(band_ids)) uint64 keys (all bands by default): two documents share a key when that
    band of their signatures is equal."""
    n = sigs.shape[0]
    band_ids = list(range(bands)) if band_ids is None else list(band_ids)
    keys = np.empty((n, len(band_ids)), np.uint64)
    with np.errstate(over="ignore"):
        for col, i in enumerate(band_ids):
            acc = np.full(n, np.uint64(i + 1))
            for j in range(i * rows, (i + 1) * rows):  # a column at a time: no uint64 copy of all signatures
                acc = mix64(acc ^ sigs[:, j].astype(np.uint64))
            keys[:, col] = acc
    return keys


def candidate_pairs(keys: np.ndarray, max_group: int = 64) -> np.ndarray:
    """(m, 2) int64 pairs (i < j) of documents sharing a band key, each pair once.

    Within a group of equal keys every pair is listed up to `max_group` members; a larger group is
    linked as a chain in index order, which bounds the work on degenerate inputs (e.g. boilerplate).
    """
    pairs = []
    n = keys.shape[0]
    for i in range(keys.shape[1]):
        order = np.argsort(keys[:, i], kind="stable")
        k = keys[order, i]
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        sizes = np.diff(np.concatenate((starts, [n])))
        two = starts[sizes == 2]  # the common case, vectorised
        pairs.append(np.sort(np.stack((order[two], order[two + 1]), axis=1), axis=1))
        for s, size in zip(starts[sizes > 2], sizes[sizes > 2]):
            members = np.sort(order[s:s + size])
            if size <= max_group:
                ii, jj = np.triu_indices(size, 1)
                pairs.append(np.stack((members[ii], members[jj]), axis=1))
            else:
                pairs.append(np.stack((members[:-1], members[1:]), axis=1))
    allp = np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)
    return np.unique(allp, axis=0) if allp.size else allp.reshape(0, 2)


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Jaccard similarity of two sets of n-gram hashes (arrays, repeats ignored)."""
    ux, uy = np.unique(x), np.unique(y)
    if ux.size == 0 and uy.size == 0:
        return 1.0
    inter = np.intersect1d(ux, uy, assume_unique=True).size
    return inter / (ux.size + uy.size - inter)


class BloomBands:
    """LSHBloom's index: one Bloom filter per band instead of a table of keys, so memory is a few
    bytes per document and band whatever the corpus size; a hit cannot be verified afterwards."""

    def __init__(self, bands: int, capacity: int, fp_rate: float = 1e-5) -> None:
        capacity = max(capacity, 1)
        self.bits = max(64, int(-capacity * math.log(fp_rate) / (math.log(2) ** 2)))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self.filters = np.zeros((bands, (self.bits + 7) // 8), np.uint8)

    @property
    def nbytes(self) -> int:
        return int(self.filters.nbytes)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """(bands, hashes) bit positions of one document's band keys (double hashing)."""
        h1 = mix64(keys)
        h2 = mix64(keys ^ np.uint64(0xA5A5A5A5A5A5A5A5)) | np.uint64(1)
        k = np.arange(self.hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return ((h1[:, None] + k[None, :] * h2[:, None]) % np.uint64(self.bits)).astype(np.int64)

    def seen_then_add(self, keys: np.ndarray, add: bool = True) -> bool:
        """True when some band of this document is already in its filter; otherwise (and `add`) insert it."""
        pos = self._positions(keys)
        rows = np.arange(self.filters.shape[0])[:, None]
        present = (self.filters[rows, pos >> 3] >> (pos & 7).astype(np.uint8)) & 1
        if present.all(axis=1).any():
            return True
        if add:
            np.bitwise_or.at(self.filters, (np.broadcast_to(rows, pos.shape), pos >> 3),
                             (np.uint8(1) << (pos & 7).astype(np.uint8)))
        return False
