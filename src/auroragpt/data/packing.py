"""Best-fit-decreasing packing of examples into fixed-length rows, as a deterministic plan.

The plan depends only on the example lengths and the row capacity, so every rank and every
restart computes the same rows (no state to save); the sample order over rows is then the
example plan's seeded permutation. Inside a row each example keeps its own document id, which
the model turns into per-example attention and restarted positions (`GPT.forward(documents=)`).
"""

from __future__ import annotations

import bisect

import numpy as np


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Rows of example indices: longest first, each into the fullest row it still fits in.

    Lengths above `capacity` are taken as `capacity` (the example is truncated). Ties break by
    index, so the plan is a pure function of its inputs."""
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), capacity)
    order = sorted(range(lengths.size), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row id), sorted
    for i in order:
        need = int(lengths[i])
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        bisect.insort(free, (room - need, row))
    return rows


def packed_row(pieces: list[tuple[np.ndarray, np.ndarray]], width: int) -> np.ndarray:
    """One row [2 x width]: sign-encoded tokens (see auroragpt.data.examples), then document ids
    (padding is a document of its own, after the last example)."""
    row = np.full(2 * width, -1, dtype=np.int64)
    at = 0
    for doc, (tokens, mask) in enumerate(pieces):
        tokens, mask = tokens[: width - at], mask[: width - at]
        n = tokens.size
        row[at:at + n] = np.where(mask > 0, tokens, -(tokens + 1))
        row[width + at:width + at + n] = doc
        at += n
    row[width + at:] = len(pieces)
    return row
