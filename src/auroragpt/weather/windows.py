"""The window geometry of the pixel-level Swin transformer, as small separate functions.

A field is laid out [B, H, W, D] on a latitude x longitude grid (row 0 is the northernmost
latitude). Windows are wh x ww tiles. Alternate blocks shift the grid by half a window before
partitioning (a roll), so information crosses window borders. The roll is exact in longitude,
which is periodic; in latitude it wraps the north pole onto the south pole, so the windows that
straddle that seam get a mask that keeps the two sides apart (`pole_mask`).

Window-parallel code (SWiPe) reuses these functions on a rank's tile: partition/unpartition are
local, the shift is where ranks exchange border quadrants, and the mask depends only on the
global latitude of a window row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """[B, H, W, D] -> [B, nH, nW, wh*ww, D] (windows in row-major order, tokens row-major inside)."""
    b, h, w, d = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // wh, w // ww, wh * ww, d)


def window_unpartition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """Inverse of `window_partition`: [B, nH, nW, wh*ww, D] -> [B, H, W, D]."""
    b, nh, nw, _, d = x.shape
    x = x.view(b, nh, nw, wh, ww, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, nh * wh, nw * ww, d)


def shift(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """Roll the grid so that the shifted windows start at row sh, column sw: [B, H, W, D]."""
    if sh == 0 and sw == 0:
        return x
    return torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))


def unshift(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """Inverse of `shift`."""
    if sh == 0 and sw == 0:
        return x
    return torch.roll(x, shifts=(sh, sw), dims=(1, 2))


def pole_mask(h: int, wh: int, sh: int, device: torch.device | None = None) -> torch.Tensor | None:
    """Attention mask of the shifted windows over latitude rows, shared by all window columns.

    Returns a bool tensor [nH, 1, wh, wh] (True = may attend) for each window row, or None when
    nothing is masked (unshifted blocks); `expand_row_mask` turns it into a token mask. Only the last window row holds rows wrapped from the
    north pole (shifted rows >= h - sh); they must not see the southern rows next to them.
    Longitude needs no mask: its wrap is the real periodicity of the globe.
    """
    if sh == 0:
        return None
    rows = torch.arange(h, device=device)
    wrapped = (rows >= h - sh).view(h // wh, wh)  # per window row, which of its rows came over the pole
    return (wrapped[:, :, None] == wrapped[:, None, :]).unsqueeze(1)


def expand_row_mask(mask: torch.Tensor, ww: int) -> torch.Tensor:
    """[nH, 1, wh, wh] row mask -> [nH, 1, N, N] token mask for windows of wh x ww tokens."""
    nh, _, wh, _ = mask.shape
    full = mask[:, :, :, None, :, None].expand(nh, 1, wh, ww, wh, ww)
    return full.reshape(nh, 1, wh * ww, wh * ww)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention inside each window. q, k, v: [B, nH, nW, heads, N, hd]; mask: [nH, 1, N, N] or None."""
    b, nh, nw, heads, n, hd = q.shape
    if mask is None:
        out = F.scaled_dot_product_attention(q.flatten(0, 2), k.flatten(0, 2), v.flatten(0, 2))
        return out.view(b, nh, nw, heads, n, hd)
    # [nH, 1, N, N] -> broadcast over batch, window columns and heads
    attn_mask = mask.view(1, nh, 1, 1, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return out


def rope_tables(wh: int, ww: int, head_dim: int, theta: float, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [N, head_dim/2] of 2-D rotary embeddings over the window-local (row, column).

    Half of the rotated pairs turn with the row, half with the column, so the scores depend only
    on the relative offset inside a window (the same in every window, shifted or not).
    """
    if head_dim % 4:
        raise ValueError(f"2-D rotary embeddings need a head size divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    rows = torch.arange(wh, device=device, dtype=torch.float32).repeat_interleave(ww)
    cols = torch.arange(ww, device=device, dtype=torch.float32).repeat(wh)
    angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=1)  # [N, hd/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of the last dim; x: [..., N, hd], cos/sin: [N, hd/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)
