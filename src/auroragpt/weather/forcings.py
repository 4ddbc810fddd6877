"""Forcings known at any time without a model: top-of-atmosphere insolation from the sun's
position, so a forecast can be conditioned on it at every lead time, for simulated and ERA5 data."""

from __future__ import annotations

import numpy as np

SOLAR_CONSTANT = 1361.0  # W m-2


def toa_insolation(times: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Instantaneous TOA insolation [time, lat, lon] in W m-2 (declination + hour angle, no
    equation of time): a smooth daily and yearly cycle, as the model needs it."""
    t = np.asarray(times, dtype="datetime64[s]")
    day = (t - t.astype("datetime64[Y]")).astype("timedelta64[s]").astype(np.float64) / 86400.0
    hour = (day % 1.0) * 24.0
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (day - 80.0) / 365.25)
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))[None, :, None]
    lon = np.asarray(lon_deg, dtype=np.float64)[None, None, :]
    hour_angle = np.deg2rad(15.0 * (hour[:, None, None] + lon / 15.0 - 12.0))
    d = decl[:, None, None]
    cos_zenith = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(hour_angle)
    return SOLAR_CONSTANT * np.clip(cos_zenith, 0.0, None)
