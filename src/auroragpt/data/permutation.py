"""A keyed bijective permutation of [0, n), computed per element instead of stored.

A shuffle array for a trillion-token run would hold hundreds of millions of entries; this gives the
same thing in O(1) memory: a balanced Feistel network on the smallest even number of bits that
covers n, with cycle-walking (re-apply until the value falls below n) to stay inside [0, n).
Everything is vectorised over numpy uint64 arrays, and each element may carry its own key and n,
so one call serves samples from many files and epochs. Keys come from `mix64` of integers only:
no Python `hash()`, no randomness, identical on every machine.
"""

from __future__ import annotations

import numpy as np

_ROUNDS = 4
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray | int) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed bijection of uint64 (wraps modulo 2**64)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def derive_key(*parts: np.ndarray | int) -> np.ndarray:
    """A uint64 key from integers (scalars or arrays, broadcast): seed, role tag, ids, epoch ..."""
    key = np.asarray(0x5EED, dtype=np.uint64)
    for part in parts:
        key = mix64(key ^ np.asarray(part).astype(np.uint64))
    return key


def _half_bits(n: np.ndarray) -> np.ndarray:
    """Half the bit width of the Feistel domain: smallest h with 4**h >= n (at least 1)."""
    n = np.maximum(np.asarray(n, dtype=np.uint64), np.uint64(2))
    bits = np.ceil(np.log2(n.astype(np.float64))).astype(np.uint64)
    # log2 in float64 can be off by one for n near 2**53; fix the rare miss exactly.
    bits = np.where((np.uint64(1) << bits) < n, bits + np.uint64(1), bits)
    return (bits + np.uint64(1)) >> np.uint64(1)


def _feistel(x: np.ndarray, round_keys: list[np.ndarray], half: np.ndarray) -> np.ndarray:
    mask = (np.uint64(1) << half) - np.uint64(1)
    left = x >> half
    right = x & mask
    for round_key in round_keys:
        f = mix64(right ^ round_key) & mask
        left, right = right, left ^ f
    return (left << half) | right


def permute(index: np.ndarray | int, n: np.ndarray | int, key: np.ndarray | int) -> np.ndarray:
    """Position of `index` under the permutation of [0, n) selected by `key` (elementwise).

    Requires 0 <= index < n and n < 2**62. Returns uint64 values in [0, n).
    """
    x, n_arr, key_arr = np.broadcast_arrays(
        np.asarray(index, dtype=np.uint64), np.asarray(n, dtype=np.uint64), np.asarray(key, dtype=np.uint64)
    )
    x = x.copy()
    half = _half_bits(n_arr)
    round_keys = [mix64(key_arr ^ np.uint64(r + 1)) for r in range(_ROUNDS)]
    todo = np.ones(x.shape, dtype=bool)
    # Cycle walking: the domain is < 4n, so each pass leaves an element outside [0, n) with
    # probability < 3/4 and the loop ends after a handful of passes.
    while todo.any():
        if todo.all():
            x = _feistel(x, round_keys, half)
        else:
            x[todo] = _feistel(x[todo], [k[todo] for k in round_keys], half[todo])
        todo = x >= n_arr
    return x
