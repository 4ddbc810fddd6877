"""A cyclone-track analogue: follow a vortex (an extremum of a field's anomaly from its zonal
mean) through a forecast and through the truth, and measure the distance between the tracks."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0


def anomaly(field: np.ndarray) -> np.ndarray:
    return field - field.mean(axis=-1, keepdims=True)


def track(fields: np.ndarray, start: tuple[int, int], radius: int = 3, sign: float = -1.0) -> np.ndarray:
    """Grid positions [T, 2] (row, col) of the extremum (sign -1: minimum) of the anomaly, each
    searched within `radius` points of the previous one (periodic in longitude, clipped at the poles)."""
    h, w = fields.shape[-2:]
    pos = [start]
    for field in fields:
        a = sign * anomaly(field)
        r0, c0 = pos[-1]
        rows = np.arange(max(r0 - radius, 0), min(r0 + radius + 1, h))
        cols = np.arange(c0 - radius, c0 + radius + 1) % w
        window = a[np.ix_(rows, cols)]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        pos.append((int(rows[i]), int(cols[j])))
    return np.array(pos[1:])


def strongest_vortex(field: np.ndarray, sign: float = -1.0, margin: int = 2) -> tuple[int, int]:
    """(row, col) of the strongest anomaly extremum away from the polar rows."""
    a = sign * anomaly(field)
    a[:margin], a[-margin:] = -np.inf, -np.inf
    i, j = np.unravel_index(np.argmax(a), a.shape)
    return int(i), int(j)


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dlon = np.deg2rad(np.asarray(lon2) - np.asarray(lon1))
    cos = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dlon)
    return EARTH_RADIUS_KM * np.arccos(np.clip(cos, -1.0, 1.0))


def track_errors(members: np.ndarray, truth: np.ndarray, init_field: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 radius: int = 3) -> dict:
    """Tracks of the strongest low at init in the truth [T, H, W] and every member [M, T, H, W];
    the distance of each member's (and of the ensemble-mean field's) position to the truth's."""
    start = strongest_vortex(init_field)
    true_track = track(truth, start, radius)
    member_tracks = np.stack([track(m, start, radius) for m in members])
    mean_track = track(members.mean(axis=0), start, radius)
    to_latlon = lambda t: (lat[t[..., 0]], lon[t[..., 1]])  # noqa: E731
    tl = to_latlon(true_track)
    member_err = great_circle_km(*to_latlon(member_tracks), tl[0][None], tl[1][None])
    return {"start": start, "truth": true_track, "members": member_tracks, "ensemble_mean": mean_track,
            "member_error_km": member_err.mean(axis=0), "ensemble_mean_error_km": great_circle_km(*to_latlon(mean_track), *tl)}
