"""The vortex tracker follows a moving low across the date line; perfect members have zero error."""

from __future__ import annotations

import numpy as np

from auroragpt.weather.tracks import great_circle_km, track_errors


def moving_low(steps: int, h: int = 16, w: int = 32, speed: int = 2, start_col: int = 26) -> np.ndarray:
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    fields = []
    for t in range(steps + 1):
        c = (start_col + speed * t) % w
        dc = (cols - c + w // 2) % w - w // 2  # periodic distance in longitude
        fields.append(-np.exp(-((rows - 5) ** 2 + dc**2) / 4.0) + 0.01 * np.cos(2 * np.pi * cols / w))
    return np.array(fields)


def test_tracker_follows_a_low_across_the_date_line():
    lat = 90.0 - (np.arange(16) + 0.5) * 180.0 / 16
    lon = np.arange(32) * 360.0 / 32
    f = moving_low(5)
    members = np.stack([f[1:], f[1:]])
    out = track_errors(members, f[1:], f[0], lat, lon)
    assert out["start"] == (5, 26)
    assert [tuple(p) for p in out["truth"]] == [(5, (26 + 2 * t) % 32) for t in range(1, 6)]  # wraps past 360
    np.testing.assert_allclose(out["member_error_km"], 0.0, atol=1e-6)
    slow = np.stack([moving_low(5, speed=1)[1:]])
    err = track_errors(slow, f[1:], f[0], lat, lon)["member_error_km"]
    assert np.all(np.diff(err) > 0)  # a slower member falls further behind with lead time
    assert abs(great_circle_km(0.0, 0.0, 0.0, 90.0) - 6371.0 * np.pi / 2) < 1e-6
