"""Scores against analytic values and direct computations."""

from __future__ import annotations

import math

import numpy as np

from auroragpt.weather import scores


def analytic_crps(mu, sigma, y):
    z = (y - mu) / sigma
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def test_fair_crps_of_large_gaussian_ensemble_matches_analytic():
    rng = np.random.default_rng(0)
    h, w, m = 6, 8, 4000
    mu, sigma = rng.normal(size=(h, w)), rng.uniform(0.5, 2.0, size=(h, w))
    truth = mu + rng.normal(size=(h, w)) * 1.3
    ens = mu + sigma * rng.normal(size=(m, h, w))
    lat_w = np.cos(np.deg2rad(np.linspace(-80, 80, h)))
    got = scores.fair_crps(ens, truth, lat_w)
    want = scores.weighted_mean(analytic_crps(mu, sigma, truth), lat_w)
    assert abs(got / want - 1) < 0.01


def test_fair_crps_pairwise_term_equals_brute_force():
    rng = np.random.default_rng(1)
    ens, truth = rng.normal(size=(5, 3, 4)), rng.normal(size=(3, 4))
    brute = np.abs(ens - truth).mean(0) - np.abs(ens[:, None] - ens[None, :]).sum((0, 1)) / (2 * 5 * 4)
    np.testing.assert_allclose(scores.fair_crps(ens, truth, np.ones(3)), brute.mean())


def test_spread_skill_calibrated_and_underdispersed():
    rng = np.random.default_rng(2)
    n, m, h, w = 400, 8, 8, 16
    centre = rng.normal(size=(n, 1, h, w))
    truth = (centre + rng.normal(size=(n, 1, h, w)))[:, 0]
    calibrated = centre + rng.normal(size=(n, m, h, w))
    under = centre + 0.4 * rng.normal(size=(n, m, h, w))
    lat_w = np.ones(h)
    ratio = lambda e: float(np.sqrt(np.mean(scores.spread(e, lat_w) ** 2)) /  # noqa: E731
                            np.sqrt(np.mean(scores.ensemble_mean_rmse(e, truth, lat_w) ** 2)) * np.sqrt((m + 1) / m))
    assert abs(ratio(calibrated) - 1) < 0.03
    assert ratio(under) < 0.6
    per_case = scores.spread_skill_ratio(calibrated, truth, lat_w)
    assert abs(np.mean(per_case) - 1) < 0.05
    hist = scores.rank_histogram(calibrated, truth)
    assert hist.sum() == n * h * w and hist.min() > 0.8 * hist.mean()  # flat when calibrated
    under_hist = scores.rank_histogram(under, truth)
    assert under_hist[0] + under_hist[-1] > 3 * (hist[0] + hist[-1]) / 2  # U-shaped when under-dispersed


def test_rmse_and_acc_equal_direct_computation():
    lat = np.array([60.0, 20.0, -20.0, -60.0])
    lat_w = np.cos(np.deg2rad(lat))
    rng = np.random.default_rng(3)
    f, y, c = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    wn = (lat_w / lat_w.mean())[:, None] * np.ones((4, 6))
    direct = math.sqrt(float((wn * (f - y) ** 2).sum() / wn.sum()))
    assert math.isclose(float(scores.rmse(f, y, lat_w)), direct, rel_tol=1e-12)
    a, b = f - c, y - c
    direct_acc = (wn * a * b).sum() / math.sqrt((wn * a * a).sum() * (wn * b * b).sum())
    assert math.isclose(float(scores.acc(f, y, c, lat_w)), direct_acc, rel_tol=1e-12)
    assert math.isclose(float(scores.acc(y, y, c, lat_w)), 1.0)
    # the polar rows count less: an error there costs less than the same error in the tropics
    e_pole, e_trop = np.zeros((4, 6)), np.zeros((4, 6))
    e_pole[0], e_trop[1] = 1, 1
    assert scores.rmse(e_pole, 0 * e_pole, lat_w) < scores.rmse(e_trop, 0 * e_trop, lat_w)


def test_power_spectrum_finds_the_wavenumber():
    lon = np.arange(64) * 2 * np.pi / 64
    field = np.cos(5 * lon)[None, :].repeat(4, 0)
    spec = scores.zonal_power_spectrum(field, np.ones(4))
    assert int(np.argmax(spec)) == 5
