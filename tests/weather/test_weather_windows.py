"""The shifted-window attention against a brute-force masked attention over the whole grid."""

from __future__ import annotations

import pytest
import torch

from auroragpt.weather import windows as win


def geometric_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int) -> torch.Tensor:
    """[HW, HW] may-attend, from geometry alone: window bands start at row sh + k*wh (clipped at the
    poles, never wrapped) and at column sw + m*ww (wrapped: longitude is periodic)."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    lat_band = torch.div(rows - sh + wh, wh, rounding_mode="floor")  # band -1.. clipped, never wrapped
    lon_band = torch.div((cols - sw) % w, ww, rounding_mode="floor")
    return (lat_band[:, None] == lat_band[None, :]) & (lon_band[:, None] == lon_band[None, :])


def windowed(q, k, v, h, w, wh, ww, shifted):
    """Our path: shift, partition, (pole mask), window attention, unpartition, unshift."""
    sh, sw = (wh // 2, ww // 2) if shifted else (0, 0)
    parts = []
    for x in (q, k, v):
        p = win.window_partition(win.shift(x, sh, sw), wh, ww)  # [B, nH, nW, N, D]
        parts.append(p.unsqueeze(3))  # one head
    row_mask = win.pole_mask(h, wh, sh)
    mask = win.expand_row_mask(row_mask, ww) if row_mask is not None else None
    out = win.window_attention(*parts, mask).squeeze(3)
    return win.unshift(win.window_unpartition(out, wh, ww), sh, sw)


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("h,w,wh,ww", [(8, 12, 4, 4), (12, 16, 4, 8), (6, 6, 2, 3)])
def test_window_attention_equals_masked_full_attention(h, w, wh, ww, shifted):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, h, w, 8, dtype=torch.float64) for _ in range(3))
    ours = windowed(q, k, v, h, w, wh, ww, shifted)
    sh, sw = (wh // 2, ww // 2) if shifted else (0, 0)
    allowed = geometric_mask(h, w, wh, ww, sh, sw)
    flat = lambda x: x.reshape(2, h * w, 8)  # noqa: E731
    ref = torch.nn.functional.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=allowed)
    torch.testing.assert_close(ours.reshape(2, h * w, 8), ref, rtol=1e-10, atol=1e-10)


def test_no_attention_across_the_poles_and_full_longitude_periodicity():
    h, w, wh, ww = 8, 16, 4, 4
    allowed = geometric_mask(h, w, wh, ww, wh // 2, ww // 2)
    idx = lambda r, c: r * w + c  # noqa: E731
    # the northernmost and southernmost rows never meet, in any column
    assert not any(allowed[idx(0, c), idx(h - 1, c2)] for c in range(w) for c2 in range(w))
    # the date line is crossed: column w-1 and column 0 share shifted windows
    assert allowed[idx(3, w - 1), idx(3, 0)]
    # and our path reproduces that: a change at column 0 moves the output at column w-1 ...
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, h, w, 4, dtype=torch.float64) for _ in range(3))
    base = windowed(q, k, v, h, w, wh, ww, True)
    v2 = v.clone()
    v2[:, 3, 0] += 10
    assert (windowed(q, k, v2, h, w, wh, ww, True)[:, 3, w - 1] - base[:, 3, w - 1]).abs().max() > 1e-3
    # ... while a change in the top row never reaches the bottom row
    v3 = v.clone()
    v3[:, 0, :] += 10
    torch.testing.assert_close(windowed(q, k, v3, h, w, wh, ww, True)[:, h - 1], base[:, h - 1])


def test_partition_roundtrip_and_shift_inverse():
    x = torch.randn(2, 8, 12, 3)
    torch.testing.assert_close(win.window_unpartition(win.window_partition(x, 4, 3), 4, 3), x)
    torch.testing.assert_close(win.unshift(win.shift(x, 2, 1), 2, 1), x)
