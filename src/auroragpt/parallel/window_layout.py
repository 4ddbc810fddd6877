"""Where each rank sits in a SWiPe layout (window x sequence parallel), checked before any process group.

Ranks are numbered wp_row-major, then sp innermost: rank = (pi * wp_w + pj) * sp + s. WP rank
(pi, pj) owns the windows of tile rows [pi*Ht, (pi+1)*Ht) x columns [pj*Wt, (pj+1)*Wt) of the
lat-lon grid; inside that tile, SP rank s holds the columns [s*Wt/sp, (s+1)*Wt/sp) for the
pointwise layers and, during attention, all of the tile's tokens for heads [s*H/sp, (s+1)*H/sp).
"""

from __future__ import annotations

from dataclasses import dataclass

from auroragpt.errors import ConfigError


@dataclass(frozen=True)
class WindowLayout:
    """wp_h x wp_w tiles of windows (latitude x longitude), sp ranks inside each tile."""

    grid_h: int
    grid_w: int
    window_h: int
    window_w: int
    n_heads: int
    wp_h: int = 1
    wp_w: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        for name in ("wp_h", "wp_w", "sp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"[parallel] {name} must be a positive integer, got {value!r}")
        n_rows, n_cols = self.grid_h // self.window_h, self.grid_w // self.window_w
        if n_rows % self.wp_h:
            raise ConfigError(
                f"[parallel] wp_h = {self.wp_h} does not divide the {n_rows} window rows "
                f"(grid_h {self.grid_h} / window_h {self.window_h})",
                hint=f"choose wp_h among the divisors of {n_rows}")
        if n_cols % self.wp_w:
            raise ConfigError(
                f"[parallel] wp_w = {self.wp_w} does not divide the {n_cols} window columns "
                f"(grid_w {self.grid_w} / window_w {self.window_w})",
                hint=f"choose wp_w among the divisors of {n_cols}")
        if self.n_heads % self.sp:
            raise ConfigError(f"[parallel] sp = {self.sp} does not divide the {self.n_heads} attention heads",
                              hint=f"choose sp among the divisors of {self.n_heads}")
        if self.tile_w % self.sp:
            raise ConfigError(
                f"[parallel] sp = {self.sp} does not divide the {self.tile_w} longitude points of a tile "
                f"(grid_w {self.grid_w} / wp_w {self.wp_w})",
                hint=f"choose sp among the divisors of {self.tile_w}")

        if self.sp > 1 and self.local_w < self.window_w // 2:
            raise ConfigError(
                f"[parallel] sp = {self.sp} leaves {self.local_w} longitude points per rank, fewer than the "
                f"half-window shift ({self.window_w // 2}) the shifted blocks exchange",
                hint="lower sp or wp_w")

    @classmethod
    def for_model(cls, cfg: object, wp_h: int = 1, wp_w: int = 1, sp: int = 1) -> "WindowLayout":
        """The layout of a `WeatherModelConfig` (duck-typed: parallel/ does not import weather/)."""
        return cls(grid_h=cfg.grid_h, grid_w=cfg.grid_w, window_h=cfg.window_h, window_w=cfg.window_w,
                   n_heads=cfg.n_heads, wp_h=wp_h, wp_w=wp_w, sp=sp)

    @property
    def wp(self) -> int:
        return self.wp_h * self.wp_w

    @property
    def world_size(self) -> int:
        return self.wp * self.sp

    @property
    def tile_h(self) -> int:
        return self.grid_h // self.wp_h

    @property
    def tile_w(self) -> int:
        return self.grid_w // self.wp_w

    @property
    def local_w(self) -> int:
        """Longitude points a rank holds outside attention (its SP share of the tile)."""
        return self.tile_w // self.sp

    def check_world(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise ConfigError(f"[parallel] wp_h x wp_w x sp = {self.wp_h} x {self.wp_w} x {self.sp} = "
                              f"{self.world_size} ranks, but the job has {world_size}",
                              hint="launch as many ranks as the layout needs, or change the layout")

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(tile row pi, tile column pj, sp index s) of a rank."""
        wp_index, s = divmod(rank, self.sp)
        pi, pj = divmod(wp_index, self.wp_w)
        return pi, pj, s

    def rank_of(self, pi: int, pj: int, s: int) -> int:
        """Global rank of tile (pi, pj) and sp index s; tile indices wrap (the exchange is periodic)."""
        return ((pi % self.wp_h) * self.wp_w + (pj % self.wp_w)) * self.sp + s

    def local_slices(self, rank: int) -> tuple[slice, slice]:
        """Rows and columns of the global grid that `rank` holds outside attention."""
        pi, pj, s = self.coords(rank)
        c0 = pj * self.tile_w + s * self.local_w
        return slice(pi * self.tile_h, (pi + 1) * self.tile_h), slice(c0, c0 + self.local_w)
