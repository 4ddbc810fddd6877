"""The embedded dynamical system: forced-dissipative barotropic vorticity on a beta-plane channel,
pseudo-spectral in torch, with a tracer heated by the insolation.

    dzeta/dt + J(psi, zeta + h) + beta dpsi/dx = (zeta_jet - zeta)/tau_r - mu zeta - nu del^4 zeta
    dT/dt    + J(psi, T)                       = (T_eq(insolation) - T)/tau_T - kappa del^4 T

with zeta = del^2 psi. The domain is periodic in x (longitude, 2 pi = 360 degrees); latitude
[0, pi] has walls at the poles, made by an odd (vorticity, psi, h) / even (T) reflection onto a
doubly periodic [0, 2 pi] domain, which the equations preserve. A relaxed, barotropically unstable
jet over orography sheds travelling vortices and Rossby waves: weather with a predictability
limit, not noise. Time unit: eight hours (`HOURS_PER_UNIT`). The output is shaped like ERA5 (z500, u500, v500, t850).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class SimParams:
    beta: float = 1.0           # planetary vorticity gradient (per radian per time unit)
    jet_speed: float = 1.2      # peak of the relaxation jet (radians per time unit)
    jet_width: float = 0.25     # radians of latitude
    tau_relax: float = 8.0      # time units
    drag: float = 0.02          # per time unit
    hyper_nu: float = 2e-5      # biharmonic viscosity
    mountain: float = 1.5       # orography amplitude in the vorticity equation
    tau_tracer: float = 4.0     # time units
    dt: float = 1.0 / 16.0      # time units


class BarotropicModel:
    """State and tendencies on an [2H, W] doubly periodic grid; only rows [0, H) are physical.

    Row j sits at y = (j + 1/2) pi / H, so the reflection y -> 2 pi - y maps row j to 2H-1-j.
    """

    def __init__(self, h: int, w: int, params: SimParams | None = None, forced: bool = True,
                 dtype: torch.dtype = torch.float64) -> None:
        self.h, self.w, self.p, self.forced, self.dtype = h, w, params or SimParams(), forced, dtype
        ny = 2 * h
        self.y = (torch.arange(ny, dtype=dtype) + 0.5) * np.pi / h  # [0, 2 pi)
        self.x = torch.arange(w, dtype=dtype) * 2 * np.pi / w
        ky = torch.fft.fftfreq(ny, d=1.0 / ny).to(dtype)
        kx = torch.fft.rfftfreq(w, d=1.0 / w).to(dtype)
        self.kx, self.ky = kx[None, :], ky[:, None]
        self.k2 = self.kx**2 + self.ky**2
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / self.k2.clamp(min=1e-12), torch.zeros_like(self.k2))
        self.dealias = ((self.kx.abs() < w / 3) & (self.ky.abs() < ny / 3)).to(dtype)
        yy = self.y[:, None].expand(ny, w)
        xx = self.x[None, :].expand(ny, w)
        lat = yy - np.pi / 2  # physical rows: -pi/2 (south wall) .. pi/2 (north wall)
        self.lat = lat
        self.zeta_jet = self.odd(self._jet_vorticity(lat)) if forced else torch.zeros_like(yy)
        bumps = torch.exp(-((xx - 1.5) ** 2 + (lat - 0.6) ** 2) / 0.12) + 0.7 * torch.exp(-((xx - 4.2) ** 2 + (lat - 0.5) ** 2) / 0.2)
        self.orography = torch.where(self.y[:, None] < np.pi, bumps, bumps.flip(0))  # even copy for output
        self.h_topo = self.odd(self.p.mountain * bumps) if forced else torch.zeros_like(yy)
        self.h_topo_hat, self.zeta_jet_hat = self.spectral(self.h_topo), self.spectral(self.zeta_jet)

    # -------------------------------------------------------------------- symmetries
    def odd(self, f: torch.Tensor) -> torch.Tensor:
        """The field on the physical half, reflected with a sign change onto the mirror half."""
        g = f.clone()
        g[self.h:] = -f[: self.h].flip(0)
        return g

    def even(self, f: torch.Tensor) -> torch.Tensor:
        g = f.clone()
        g[self.h:] = f[: self.h].flip(0)
        return g

    def _jet_vorticity(self, lat: torch.Tensor) -> torch.Tensor:
        """Vorticity of two zonal jets at +-29 degrees; u is even across the walls, so zeta = -du/dy is odd."""
        bump = lambda centre: torch.exp(-((lat - centre) / self.p.jet_width) ** 2)  # noqa: E731
        u = self.even(self.p.jet_speed * (bump(0.5) + 0.7 * bump(-0.5)))
        return -torch.fft.irfft2(1j * self.ky * torch.fft.rfft2(u), s=u.shape)

    # -------------------------------------------------------------------- spectral calculus
    def spectral(self, f: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(f, dim=(-2, -1))

    def grid(self, f_hat: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(f_hat, s=(2 * self.h, self.w), dim=(-2, -1))

    def streamfunction(self, zeta_hat: torch.Tensor) -> torch.Tensor:
        return -zeta_hat * self.inv_k2

    def velocity(self, zeta_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        psi_hat = self.streamfunction(zeta_hat)
        return self.grid(-1j * self.ky * psi_hat), self.grid(1j * self.kx * psi_hat)  # u = -psi_y, v = psi_x

    def tendencies(self, zeta_hat: torch.Tensor, tracer_hat: torch.Tensor, t_eq_hat: torch.Tensor | None):
        """Spectral tendencies of vorticity and tracer; products dealiased by the 2/3 rule.

        All six derivative fields go through one batched inverse FFT and both products through
        one forward FFT: at demo sizes the cost is per call, not per point.
        """
        p, d = self.p, self.dealias
        psi_hat = self.streamfunction(zeta_hat)
        q_hat = (zeta_hat + self.h_topo_hat) * d
        c_hat = tracer_hat * d
        ikx, iky = 1j * self.kx, 1j * self.ky
        u, v, qx, qy, cx, cy = self.grid(torch.stack([-iky * psi_hat, ikx * psi_hat, ikx * q_hat, iky * q_hat,
                                                       ikx * c_hat, iky * c_hat]))
        adv = self.spectral(torch.stack([u * qx + v * qy, u * cx + v * cy])) * d
        dz = -adv[0] - p.beta * ikx * psi_hat
        dc = -adv[1]
        if self.forced:
            dz = dz + (self.zeta_jet_hat - zeta_hat) / p.tau_relax - p.drag * zeta_hat - p.hyper_nu * self.k2**2 * zeta_hat
            dc = dc + (t_eq_hat - tracer_hat) / p.tau_tracer - p.hyper_nu * self.k2**2 * tracer_hat
        return dz * d, dc * d  # modes beyond 2/3 stay zero (and stable under the hyperviscosity)

    def step(self, zeta_hat: torch.Tensor, tracer_hat: torch.Tensor, t_eq_hat: torch.Tensor | None = None, dt: float | None = None):
        """One classical RK4 step."""
        dt = dt or self.p.dt
        k1 = self.tendencies(zeta_hat, tracer_hat, t_eq_hat)
        k2 = self.tendencies(zeta_hat + 0.5 * dt * k1[0], tracer_hat + 0.5 * dt * k1[1], t_eq_hat)
        k3 = self.tendencies(zeta_hat + 0.5 * dt * k2[0], tracer_hat + 0.5 * dt * k2[1], t_eq_hat)
        k4 = self.tendencies(zeta_hat + dt * k3[0], tracer_hat + dt * k3[1], t_eq_hat)
        zeta_hat = zeta_hat + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        tracer_hat = tracer_hat + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return zeta_hat, tracer_hat

    # -------------------------------------------------------------------- invariants
    def energy(self, zeta_hat: torch.Tensor) -> float:
        u, v = self.velocity(zeta_hat)
        return float(0.5 * (u**2 + v**2).mean())

    def enstrophy(self, zeta_hat: torch.Tensor) -> float:
        return float(0.5 * (self.grid(zeta_hat) ** 2).mean())

    def initial_vortices(self, seed: int, n: int = 12) -> torch.Tensor:
        """Gaussian vortices of random sign, position and size on the physical half (odd-extended)."""
        rng = np.random.default_rng(seed)
        yy, xx = self.y[:, None].expand(2 * self.h, self.w), self.x[None, :].expand(2 * self.h, self.w)
        zeta = torch.zeros_like(yy)
        for _ in range(n):
            x0, y0 = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, np.pi - 0.3)
            r, amp = rng.uniform(0.15, 0.35), rng.choice([-1, 1]) * rng.uniform(3, 6)
            dx = torch.remainder(xx - x0 + np.pi, 2 * np.pi) - np.pi
            zeta = zeta + amp * torch.exp(-(dx**2 + (yy - y0) ** 2) / r**2)
        zeta[self.h:] = 0
        return self.odd(zeta)


VARIABLES = ("z500", "u500", "v500", "t850")
FORCINGS = ("orography", "land_sea_mask", "toa_incident_solar_radiation")
START = np.datetime64("2000-01-01T00:00:00")
DAY = np.timedelta64(86400, "s")
# Output scales that give the fields ERA5-like magnitudes (z500 ~ 54,000 m2 s-2, winds of tens of
# m/s, t850 ~ 250-280 K). They are presentation only, not a consistent dimensional conversion of the
# non-dimensional dynamics, whose time unit is HOURS_PER_UNIT.
HOURS_PER_UNIT = 8.0
U_SCALE, Z_MEAN, Z_SCALE, T_MEAN, T_SCALE = 74.0, 54000.0, 4000.0, 250.0, 40.0


def simulate(h: int = 32, w: int = 64, days: float = 120.0, every_hours: float = 6.0, spinup_days: float = 30.0,
             seed: int = 0, params: SimParams | None = None, progress=None):
    """Run the model and return an ERA5-shaped xarray Dataset (time, latitude, longitude).

    Latitudes are cell centres from north to south, longitudes from 0 east, like ERA5.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64 x 64 FFT is slower on several threads than on one
    try:
        return _simulate(h, w, days, every_hours, spinup_days, seed, params, progress)
    finally:
        torch.set_num_threads(threads)


def _simulate(h: int, w: int, days: float, every_hours: float, spinup_days: float, seed: int,
              params: SimParams | None, progress):
    import xarray as xr

    from auroragpt.weather.forcings import toa_insolation

    model = BarotropicModel(h, w, params)
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = np.arange(w) * 360.0 / w
    per_save = max(1, round(every_hours / HOURS_PER_UNIT / model.p.dt))
    dt_units = every_hours / HOURS_PER_UNIT / per_save
    n_spin, n_save = round(spinup_days * 24 / every_hours), round(days * 24 / every_hours)
    zeta_hat = model.spectral(model.initial_vortices(seed)) * model.dealias
    tracer_hat = model.spectral(model.even(torch.cos(model.lat) * 0.8)) * model.dealias
    start = START - int(spinup_days * 86400) * np.timedelta64(1, "s")
    out = {name: np.zeros((n_save, h, w), dtype=np.float32) for name in VARIABLES}
    times = START + (np.arange(n_save) * every_hours * 3600).astype("timedelta64[s]")
    for i in range(n_spin + n_save):
        now = start + int(i * every_hours * 3600) * np.timedelta64(1, "s")
        t_eq_hat = model.spectral(tracer_equilibrium(model, now))
        for _ in range(per_save):
            zeta_hat, tracer_hat = model.step(zeta_hat, tracer_hat, t_eq_hat, dt_units)
        if i >= n_spin:
            _store(model, zeta_hat, tracer_hat, out, i - n_spin)
        if progress is not None:
            progress(i + 1, n_spin + n_save)
    # rows of the model run south -> north; ERA5 runs north -> south
    data = {name: (("time", "latitude", "longitude"), arr[:, ::-1].copy()) for name, arr in out.items()}
    oro = model.orography[:h].flip(0).numpy().astype(np.float32)
    data["orography"] = (("latitude", "longitude"), oro * 2000.0)
    data["land_sea_mask"] = (("latitude", "longitude"), (oro > 0.2).astype(np.float32))
    data["toa_incident_solar_radiation"] = (("time", "latitude", "longitude"), toa_insolation(times, lat, lon).astype(np.float32))
    ds = xr.Dataset(data, coords={"time": times, "latitude": lat, "longitude": lon})
    ds.attrs.update(source="auroragpt weather simulate: forced-dissipative barotropic vorticity (pseudo-spectral)",
                    seed=seed, spinup_days=spinup_days)
    return ds


def tracer_equilibrium(model: BarotropicModel, now: np.datetime64) -> torch.Tensor:
    """Radiative-equilibrium tracer: a pole-to-equator contrast plus the local insolation."""
    from auroragpt.weather.forcings import SOLAR_CONSTANT, toa_insolation

    lat_deg = (model.lat[: model.h, 0] * 180 / np.pi).numpy()
    lon_deg = (model.x * 180 / np.pi).numpy()
    sun = torch.from_numpy(toa_insolation(np.array([now]), lat_deg, lon_deg)[0]).to(model.dtype) / SOLAR_CONSTANT
    field = torch.zeros(2 * model.h, model.w, dtype=model.dtype)
    field[: model.h] = 0.6 * torch.cos(model.lat[: model.h]) + 0.4 * sun
    return model.even(field)


def _store(model: BarotropicModel, zeta_hat: torch.Tensor, tracer_hat: torch.Tensor, out: dict, i: int) -> None:
    h = model.h
    psi = model.grid(model.streamfunction(zeta_hat))[:h]
    u, v = model.velocity(zeta_hat)
    out["z500"][i] = (Z_MEAN + Z_SCALE * psi).numpy()
    out["u500"][i] = (U_SCALE * u[:h]).numpy()
    out["v500"][i] = (U_SCALE * v[:h]).numpy()
    out["t850"][i] = (T_MEAN + T_SCALE * model.grid(tracer_hat)[:h]).numpy()


def write_dataset(ds, out: str | Path, force: bool = False) -> Path:
    """Write `ds` as a zarr store with its normalisation stats and split bounds in the attributes."""
    import json

    from auroragpt.weather.dataset import STATS_ATTR, compute_stats, split_bounds, state_variables, write_zarr_atomically

    ds = ds.copy()
    ds.attrs[STATS_ATTR] = json.dumps(compute_stats(ds, state_variables(ds)))
    train_end, valid_end = split_bounds(ds)
    ds.attrs.update(train_end=str(train_end), valid_end=str(valid_end))
    return write_zarr_atomically(ds, out, force)
