"""Text normalisation and vectorised word / n-gram hashing shared by dedup and decontamination.

Hashes must be identical in every process and on every run (Python's `hash` is salted per
process), so words are hashed in numpy from their UTF-8 bytes: a polynomial prefix hash modulo
2**64 gives every word's raw hash in O(bytes) vector operations, and a splitmix64 finaliser mixes it.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np

_P = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_COMBINE = np.uint64(0x9E3779B97F4A7C15)


def normalize_exact(text: str) -> str:
    """The form exact dedup compares: NFKC, case-folded, runs of whitespace as one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def count_words(text: str) -> int:
    """Whitespace-separated words: the size measure of ledgers and reports (no tokenizer needed)."""
    return len(text.split())


def content_digest(text: str) -> bytes:
    """16-byte digest of the normalised text: two documents are exact copies when these are equal."""
    return hashlib.blake2b(normalize_exact(text).encode("utf-8"), digest_size=16).digest()


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise on uint64 (wraps modulo 2**64 by design)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


_WORD_BYTE = np.zeros(256, bool)
_WORD_BYTE[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"]] = True
_WORD_BYTE[0x80:] = True  # every byte of a non-ASCII character


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word of every document, words per document), in one vector pass.

    A word here is a maximal run of ASCII letters, digits, underscores and non-ASCII characters in
    the lower-cased UTF-8 text (so "Hello, world!" is hello + world, and "naïve" one word).
    """
    encoded = [t.lower().encode("utf-8") for t in texts]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    b = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64), np.zeros(len(texts), np.int64)
    doc_starts = np.cumsum(lengths) - lengths
    word = _WORD_BYTE[b]
    edge = np.zeros(b.size + 1, bool)
    edge[doc_starts[lengths > 0]] = True  # a document boundary ends and starts words
    prev = np.concatenate(([False], word[:-1])) & ~edge[:-1]
    nxt = np.concatenate((word[1:], [False])) & ~edge[1:]
    starts = np.flatnonzero(word & ~prev)
    ends = np.flatnonzero(word & ~nxt) + 1
    counts = np.bincount(np.searchsorted(doc_starts, starts, side="right") - 1, minlength=len(texts))
    counts = counts.astype(np.int64)
    if starts.size == 0:
        return np.zeros(0, np.uint64), counts
    with np.errstate(over="ignore"):
        powers = np.empty(b.size + 1, np.uint64)
        powers[0] = 1
        powers[1:] = _P
        np.cumprod(powers, out=powers)
        inv = np.empty(b.size + 1, np.uint64)
        inv[0] = 1
        inv[1:] = _P_INV
        np.cumprod(inv, out=inv)
        prefix = np.zeros(b.size + 1, np.uint64)
        np.cumsum((b.astype(np.uint64) + np.uint64(1)) * powers[:-1], out=prefix[1:])
        raw = (prefix[ends] - prefix[starts]) * inv[starts]
        raw += (ends - starts).astype(np.uint64) * _COMBINE
    return mix64(raw), counts


def ngram_hashes(hashes: np.ndarray, counts: np.ndarray, n: int, short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word n-gram, n-grams per document) from `word_hashes`' output.

    With `short`, a document of 1..n-1 words has one n-gram made of all its words (so it still
    has a signature); without, it has none (decontamination wants only full n-grams).
    """
    ends = np.cumsum(counts)
    starts = ends - counts
    full = np.maximum(counts - n + 1, 0)
    per_doc = np.where((counts > 0) & (counts < n), 1, full) if short else full
    total = int(per_doc.sum())
    if total == 0:
        return np.zeros(0, np.uint64), per_doc
    doc = np.repeat(np.arange(counts.size), per_doc)
    first = np.cumsum(per_doc) - per_doc
    pos = starts[doc] + (np.arange(total) - first[doc])
    limit = ends[doc]
    acc = np.zeros(total, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            idx = pos + j
            ok = idx < limit
            acc = acc * _COMBINE + np.where(ok, hashes[np.minimum(idx, hashes.size - 1)], np.uint64(0))
    return mix64(acc), per_doc
