"""Probabilistic and deterministic skill scores in WeatherBench2 / GenCast conventions.

Arrays end in (latitude, longitude); ensembles have the member axis just before them:
forecast [..., M, H, W], truth [..., H, W]. Every spatial mean is weighted by `lat_weights`
(cos latitude normalised to mean 1), so a polar row counts for its small area.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(x: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """Area-weighted mean over the last two axes (latitude, longitude)."""
    w = lat_weights[:, None] / lat_weights.mean()
    return (x * w).mean(axis=(-2, -1))


def rmse(forecast: np.ndarray, truth: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """Latitude-weighted RMSE of a deterministic field [..., H, W]."""
    return np.sqrt(weighted_mean((forecast - truth) ** 2, lat_weights))


def ensemble_mean_rmse(ensemble: np.ndarray, truth: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    return rmse(ensemble.mean(axis=-3), truth, lat_weights)


def acc(forecast: np.ndarray, truth: np.ndarray, climatology: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """Anomaly correlation coefficient against a climatology, latitude-weighted."""
    a, b = forecast - climatology, truth - climatology
    return weighted_mean(a * b, lat_weights) / np.sqrt(weighted_mean(a * a, lat_weights) * weighted_mean(b * b, lat_weights))


def fair_crps(ensemble: np.ndarray, truth: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """Fair (unbiased for a finite ensemble) CRPS: E|X - y| - sum_{i != j} |X_i - X_j| / (2 M (M - 1)).

    The pairwise sum uses the sorted members: sum_{i,j} |x_i - x_j| = 2 sum_k (2k - M + 1) x_(k).
    """
    m = ensemble.shape[-3]
    if m < 2:
        raise ValueError("the fair CRPS needs at least 2 members")
    skill = np.abs(ensemble - truth[..., None, :, :]).mean(axis=-3)
    ranks = (2 * np.arange(m) - m + 1).reshape((m, 1, 1))
    pairwise = 2 * (np.sort(ensemble, axis=-3) * ranks).sum(axis=-3)
    return weighted_mean(skill - pairwise / (2 * m * (m - 1)), lat_weights)


def spread(ensemble: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """sqrt of the area mean of the unbiased ensemble variance."""
    return np.sqrt(weighted_mean(ensemble.var(axis=-3, ddof=1), lat_weights))


def spread_skill_ratio(ensemble: np.ndarray, truth: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """sqrt((M + 1) / M) x spread / ensemble-mean RMSE: 1 for a calibrated ensemble of any size
    (the factor accounts for the finite ensemble's mean being itself uncertain), < 1 under-dispersed."""
    m = ensemble.shape[-3]
    return np.sqrt((m + 1) / m) * spread(ensemble, lat_weights) / ensemble_mean_rmse(ensemble, truth, lat_weights)


def rank_histogram(ensemble: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Counts of the truth's rank among the members (M + 1 bins; ties broken at random, seeded)."""
    m = ensemble.shape[-3]
    below = (ensemble < truth[..., None, :, :]).sum(axis=-3)
    ties = (ensemble == truth[..., None, :, :]).sum(axis=-3)
    rng = np.random.default_rng(0)
    rank = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    return np.bincount(rank.ravel(), minlength=m + 1)


def zonal_power_spectrum(field: np.ndarray, lat_weights: np.ndarray) -> np.ndarray:
    """Power per zonal wavenumber [..., W//2 + 1], averaged over latitude with area weights."""
    power = np.abs(np.fft.rfft(field, axis=-1)) ** 2 / field.shape[-1] ** 2
    w = lat_weights / lat_weights.sum()
    return (power * w[:, None]).sum(axis=-2)
