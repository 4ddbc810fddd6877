"""The simulator's physics: invariants of the inviscid dynamics and the Rossby-wave dispersion."""

from __future__ import annotations

import math

import numpy as np
import torch

from auroragpt.weather.simulate import BarotropicModel, SimParams


def test_energy_and_enstrophy_conserved_without_forcing():
    m = BarotropicModel(16, 32, SimParams(beta=1.0), forced=False)
    zeta = m.spectral(m.initial_vortices(3)) * m.dealias
    tracer = torch.zeros_like(zeta)
    e0, z0 = m.energy(zeta), m.enstrophy(zeta)
    for _ in range(200):
        zeta, tracer = m.step(zeta, tracer, None, dt=0.02)
    assert abs(m.energy(zeta) / e0 - 1) < 1e-4
    assert abs(m.enstrophy(zeta) / z0 - 1) < 1e-4
    # and the flow did move: the field is not its initial self
    assert (m.grid(zeta) - m.grid(m.spectral(m.initial_vortices(3)) * m.dealias)).abs().max() > 0.1


def test_rossby_wave_phase_speed():
    beta, k, l = 2.0, 2, 1
    m = BarotropicModel(16, 32, SimParams(beta=beta), forced=False)
    y, x = m.y[:, None], m.x[None, :]
    psi = torch.sin(l * y) * torch.cos(k * x)
    zeta = m.spectral(-(k**2 + l**2) * psi)
    tracer = torch.zeros_like(zeta)
    t_end, dt = 1.0, 0.01
    for _ in range(round(t_end / dt)):
        zeta, tracer = m.step(zeta, tracer, None, dt=dt)
    omega = -beta * k / (k**2 + l**2)
    expected = torch.sin(l * y) * torch.cos(k * x - omega * t_end)
    got = m.grid(m.streamfunction(zeta))
    assert (got - expected).abs().max() < 1e-6
    # a wrong dispersion relation (e.g. no beta effect) would be far off
    assert (psi - expected).abs().max() > 0.5


def test_simulated_dataset_is_era5_shaped(tmp_path):
    import xarray as xr

    from auroragpt.weather.simulate import simulate, write_dataset

    ds = simulate(h=16, w=32, days=4, spinup_days=1, seed=1)
    out = write_dataset(ds, tmp_path / "sim.zarr")
    back = xr.open_zarr(out)
    assert set(["z500", "u500", "v500", "t850", "orography", "land_sea_mask"]) <= set(back.data_vars)
    assert back["z500"].dims == ("time", "latitude", "longitude")
    assert back.latitude.values[0] > 0 > back.latitude.values[-1]  # north to south, like ERA5
    assert np.isfinite(back["z500"].values).all()
    assert "auroragpt_stats" in back.attrs and "train_end" in back.attrs
    assert math.isclose(float(np.diff(back.time.values)[0] / np.timedelta64(1, "h")), 6.0)
