"""A small zarr with ERA5 / WeatherBench2 names and dims (time, level, latitude, longitude), made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_era5_like(path: Path, times: int = 64, h: int = 16, w: int = 32) -> Path:
    """Travelling waves with a daily cycle: learnable, and shaped like a WeatherBench2 download."""
    import xarray as xr

    rng = np.random.default_rng(0)
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = np.arange(w) * 360.0 / w
    t = np.arange(times)
    phase = np.deg2rad(lon)[None, None, :] - 0.3 * t[:, None, None]
    band = np.cos(np.deg2rad(lat))[None, :, None]
    wave = band * np.cos(3 * phase) + 0.3 * band * np.sin(2 * phase + 0.1 * t[:, None, None])
    noise = lambda: 0.05 * rng.normal(size=(times, h, w))  # noqa: E731
    z = np.stack([54000 + 800 * (wave + noise()), 14000 + 500 * (wave + noise())], axis=1)
    temp = np.stack([250 + 10 * (wave + noise()), 280 + 12 * (np.roll(wave, 2, -1) + noise())], axis=1)
    ds = xr.Dataset(
        {"geopotential": (("time", "level", "latitude", "longitude"), z.astype(np.float32)),
         "temperature": (("time", "level", "latitude", "longitude"), temp.astype(np.float32)),
         "2m_temperature": (("time", "latitude", "longitude"), (285 + 15 * band * np.cos(phase)).astype(np.float32)),
         "land_sea_mask": (("latitude", "longitude"), (rng.random((h, w)) > 0.7).astype(np.float32))},
        coords={"time": np.datetime64("2020-01-01T00") + t * np.timedelta64(6, "h"), "level": [500, 850],
                "latitude": lat, "longitude": lon})
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    return path


@pytest.fixture(scope="session")
def era5_zarr(tmp_path_factory) -> Path:
    return make_era5_like(tmp_path_factory.mktemp("era5") / "era5.zarr")
