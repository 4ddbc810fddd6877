"""A keyed bijective permutation of [0, n), computed per element instead of stored.

A shuffle array for a trillion-token run would hold hundreds of millions of entries; this gives the
same thing in O(1) memory: a Feistel network on the smallest number of bits that covers n, with
cycle-walking (re-apply until the value falls below n) to stay inside [0, n).
Everything is vectorised over numpy uint64 arrays, and each element may carry its own key and n,
so one call serves samples from many files and epochs. Keys come from `mix64` of integers only:
no Python `hash()`, no randomness, identical on every machine.
"""

from __future__ import annotations

import numpy as np

from auroragpt.hashing import mix64

_ROUND_CONSTANTS = [np.uint64(c) for c in (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89, 0x452821E638D01377, 0xBE5466CF34E90C6C)]


def derive_key(*parts: np.ndarray | int) -> np.ndarray:
    """A uint64 key from integers (scalars or arrays, broadcast): seed, role tag, ids, epoch ..."""
    key = np.asarray(0x5EED, dtype=np.uint64)
    for part in parts:
        key = mix64(key ^ np.asarray(part).astype(np.uint64))
    return key


def subkey(base: np.ndarray | int, ident: np.ndarray | int, counter: np.ndarray | int) -> np.ndarray:
    """Key for (ident, counter) under `base`, e.g. (file, epoch): one mix of both packed in 64 bits.

    Needs ident < 2**31 and counter < 2**32 (files and epochs are far below both).
    """
    packed = (np.asarray(ident).astype(np.uint64) << np.uint64(32)) | np.asarray(counter).astype(np.uint64)
    return mix64(np.asarray(base, dtype=np.uint64) ^ packed)


def _bits(n: np.ndarray) -> np.ndarray:
    """Bit width of the Feistel domain: smallest b >= 1 with 2**b >= n, so the domain is < 2n."""
    n = np.maximum(np.asarray(n, dtype=np.uint64), np.uint64(2))
    bits = np.ceil(np.log2(n.astype(np.float64))).astype(np.uint64)
    # log2 in float64 can be off by one near powers of two above 2**53; fix the rare miss exactly.
    bits = np.where((np.uint64(1) << bits) < n, bits + np.uint64(1), bits)
    return np.where((np.uint64(1) << (bits - np.uint64(1))) >= n, bits - np.uint64(1), bits)


def _feistel(x: np.ndarray, key: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Alternating (unbalanced when `bits` is odd) Feistel rounds: each xors one half with a keyed
    hash of the other, which is invertible whatever the two widths are."""
    low_bits = bits >> np.uint64(1)
    low_mask = (np.uint64(1) << low_bits) - np.uint64(1)
    high_mask = (np.uint64(1) << (bits - low_bits)) - np.uint64(1)
    high, low = x >> low_bits, x & low_mask
    for r, constant in enumerate(_ROUND_CONSTANTS):
        if r % 2 == 0:
            high = high ^ (mix64(low ^ key ^ constant) & high_mask)
        else:
            low = low ^ (mix64(high ^ key ^ constant) & low_mask)
    return (high << low_bits) | low


def permute(index: np.ndarray | int, n: np.ndarray | int, key: np.ndarray | int) -> np.ndarray:
    """Position of `index` under the permutation of [0, n) selected by `key` (elementwise).

    Requires 0 <= index < n and n < 2**62. Returns uint64 values in [0, n).
    """
    x, n_arr, key_arr = np.broadcast_arrays(
        np.asarray(index, dtype=np.uint64), np.asarray(n, dtype=np.uint64), np.asarray(key, dtype=np.uint64)
    )
    out = np.empty(x.shape, dtype=np.uint64)
    flat_out = out.reshape(-1)
    live = np.arange(x.size)
    x, n_live, key_live = x.reshape(-1), n_arr.reshape(-1), key_arr.reshape(-1)
    bits = _bits(n_live)
    # Cycle walking: the domain is < 2n, so each pass leaves an element outside [0, n) with
    # probability < 1/2; the live set shrinks geometrically and is compacted every pass.
    while live.size:
        x = _feistel(x, key_live, bits)
        inside = x < n_live
        flat_out[live[inside]] = x[inside]
        outside = ~inside
        if not outside.any():
            break
        live, x, n_live, key_live, bits = live[outside], x[outside], n_live[outside], key_live[outside], bits[outside]
    return out
