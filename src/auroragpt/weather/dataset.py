"""Gridded datasets through xarray (zarr or netCDF) with ERA5 / WeatherBench2 names and dims.

A dataset holds time-varying state variables (time, [level,] latitude, longitude), optional
static fields (orography, land_sea_mask) and optionally the insolation (computed from the time
when absent). Per-variable normalisation statistics are computed once on the training split and
stored in the dataset's attributes; train/valid/test splits are by time; latitude weights are
cos(latitude) normalised to mean 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auroragpt.errors import DataError
from auroragpt.log import get_logger

log = get_logger(__name__)

STATIC_NAMES = ("orography", "geopotential_at_surface", "land_sea_mask")
INSOLATION = "toa_incident_solar_radiation"
STATS_ATTR = "auroragpt_stats"
SPLIT_FRACTIONS = (0.7, 0.85)  # train before 70% of the times, valid before 85%, test after


def open_dataset(path: str | Path):
    """An xarray Dataset from a zarr store or a netCDF file, with a clear error when it is not one."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise DataError(f"weather dataset {path} does not exist",
                        hint="make one with `auroragpt weather simulate --out sim.zarr`, or set data.path")
    try:
        if path.is_dir():
            return xr.open_zarr(path, consolidated=None)
        return xr.open_dataset(path)
    except Exception as err:  # xarray raises many types for a file it cannot read
        raise DataError(f"{path} could not be read as zarr or netCDF: {type(err).__name__}: {err}".splitlines()[0],
                        hint="pass a zarr directory or a .nc file with dims time, latitude, longitude") from None


def check_dims(ds, path: str | Path) -> None:
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise DataError(f"{path}: dimension {dim!r} is missing (dims: {', '.join(map(str, ds.dims))})",
                            hint="rename to ERA5 / WeatherBench2 names: time, latitude, longitude (and level)")


def state_variables(ds, requested: str = "") -> list[str]:
    """Channel names of the state: every (var, level) of the time-varying variables, or `requested`."""
    names = []
    for name, da in ds.data_vars.items():
        if name == INSOLATION or "time" not in da.dims or not {"latitude", "longitude"} <= set(da.dims):
            continue
        if "level" in da.dims:
            names += [f"{name}{int(lvl)}" for lvl in ds["level"].values]
        else:
            names.append(str(name))
    if requested:
        wanted = [v.strip() for v in requested.split(",") if v.strip()]
        missing = [v for v in wanted if v not in names]
        if missing:
            raise DataError(f"variables {missing} are not in the dataset", hint=f"it has: {', '.join(names)}")
        return wanted
    if not names:
        raise DataError("the dataset has no variable with dims (time, latitude, longitude)")
    return names


def channel(ds, name: str):
    """One state channel as a (time, latitude, longitude) DataArray; 'z500' may be z at level 500."""
    if name in ds.data_vars:
        return ds[name]
    for var, da in ds.data_vars.items():
        if "level" in da.dims and name.startswith(str(var)) and name[len(str(var)):].isdigit():
            return da.sel(level=int(name[len(str(var)):]))
    raise DataError(f"variable {name} is not in the dataset")


def split_bounds(ds) -> tuple[np.datetime64, np.datetime64]:
    """(train_end, valid_end): times before train_end train, before valid_end validate. The
    dataset's own attributes decide when it has them; else 70% / 15% / 15% of its times."""
    if "train_end" in ds.attrs and "valid_end" in ds.attrs:
        return np.datetime64(ds.attrs["train_end"]), np.datetime64(ds.attrs["valid_end"])
    times = ds["time"].values
    a, b = (int(len(times) * f) for f in SPLIT_FRACTIONS)
    return times[a], times[b]


def split_indices(ds, split: str) -> np.ndarray:
    times = ds["time"].values
    train_end, valid_end = split_bounds(ds)
    keep = {"train": times < train_end, "valid": (times >= train_end) & (times < valid_end), "test": times >= valid_end}
    return np.nonzero(keep[split])[0]


def latitude_weights(lat: np.ndarray) -> np.ndarray:
    w = np.cos(np.deg2rad(lat))
    return w / w.mean()


def compute_stats(ds, variables: list[str]) -> dict[str, dict[str, float]]:
    """Mean and std of each channel, and std of its one-step difference, on the training split."""
    train = split_indices(ds, "train")
    stats = {}
    for name in variables:
        x = channel(ds, name).isel(time=train).values.astype(np.float64)
        stats[name] = {"mean": float(x.mean()), "std": float(x.std() or 1.0),
                       "diff_std": float(np.diff(x, axis=0).std() or 1.0)}
    for name in STATIC_NAMES + (INSOLATION,):
        if name in ds.data_vars:
            x = ds[name].values.astype(np.float64)
            stats[name] = {"mean": float(x.mean()), "std": float(x.std() or 1.0)}
    return stats


def load_or_compute_stats(ds, path: str | Path, variables: list[str]) -> dict[str, dict[str, float]]:
    """The stats stored with the dataset; computed (and stored, when the store is writable) once."""
    stored = json.loads(ds.attrs.get(STATS_ATTR, "{}"))
    if all(v in stored for v in variables):
        return stored
    stats = compute_stats(ds, variables)
    if Path(path).is_dir():
        try:
            import zarr

            zarr.open_group(str(path), mode="r+").attrs[STATS_ATTR] = json.dumps(stats)
        except Exception as err:  # read-only store: keep them in memory
            log.warning("could not store normalisation stats in %s (%s); computed in memory", path, err)
    return stats


@dataclass
class WeatherArrays:
    """A dataset normalised and in memory, as the model consumes it (float32 tensors)."""

    variables: list[str]
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    states: torch.Tensor      # [T, V, H, W] (x - mean) / std
    diff_scale: torch.Tensor  # [V] std of the normalised one-step difference
    static: torch.Tensor      # [S, H, W] normalised static fields + sin(latitude)
    insolation: torch.Tensor  # [T, 1, H, W] normalised
    lat_weight: torch.Tensor  # [H, W]
    stats: dict
    history: int

    @property
    def n_cond(self) -> int:
        return self.history * len(self.variables) + self.static.shape[0] + 1

    def cond(self, i: int, states: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning for the step i -> i+1: states i, i-1, ... (`history` of them), the static
        fields and the insolation at the valid time i+1. `states` overrides the dataset's (rollout)."""
        s = self.states if states is None else states
        past = [s[max(i - k, 0)] for k in range(self.history)]
        return torch.cat(past + [self.static, self.insolation[i + 1]], dim=0)

    def training_example(self, i: int) -> torch.Tensor:
        """[V + C + 1, H, W]: normalised tendency i -> i+1, conditioning, latitude weight."""
        tendency = (self.states[i + 1] - self.states[i]) / self.diff_scale[:, None, None]
        return torch.cat([tendency, self.cond(i), self.lat_weight[None]], dim=0)

    def denormalise(self, states: torch.Tensor) -> np.ndarray:
        mean = torch.tensor([self.stats[v]["mean"] for v in self.variables])[:, None, None]
        std = torch.tensor([self.stats[v]["std"] for v in self.variables])[:, None, None]
        return (states * std + mean).numpy()


def load_arrays(path: str | Path, variables: str = "", history: int = 2) -> WeatherArrays:
    """Read, check, normalise and hold a dataset in memory (the CPU demo and moderate grids)."""
    ds = open_dataset(path)
    check_dims(ds, path)
    names = state_variables(ds, variables)
    if ds.sizes["time"] < history + 2:
        raise DataError(f"{path} has {ds.sizes['time']} times; at least {history + 2} are needed")
    stats = load_or_compute_stats(ds, path, names)
    lat, lon, times = ds["latitude"].values, ds["longitude"].values, ds["time"].values
    states = np.stack([(channel(ds, n).transpose("time", "latitude", "longitude").values - stats[n]["mean"]) / stats[n]["std"]
                       for n in names], axis=1)
    diff_scale = np.array([stats[n]["diff_std"] / stats[n]["std"] for n in names])
    static = [(ds[n].values - stats[n]["mean"]) / stats[n]["std"] for n in STATIC_NAMES if n in ds.data_vars and "time" not in ds[n].dims]
    static.append(np.sin(np.deg2rad(lat))[:, None].repeat(len(lon), axis=1))
    # Always from the sun's position (ERA5 stores an hourly accumulation in J m-2 instead), with a
    # fixed scale, so forecasts compute the same channel at valid times beyond the dataset's end.
    sun = normalised_insolation(times, lat, lon)
    lat_w = np.repeat(latitude_weights(lat)[:, None], len(lon), axis=1)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return WeatherArrays(names, times, lat, lon, f32(states), f32(diff_scale), f32(np.stack(static)),
                         f32(sun[:, None]), f32(lat_w), stats, history)


def normalised_insolation(times: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    from auroragpt.weather.forcings import toa_insolation

    return (toa_insolation(times, lat, lon) - 340.0) / 420.0


def write_zarr_atomically(ds, out: str | Path, force: bool) -> Path:
    """Write OUT.tmpPID, then rename: OUT is never half-written (zarr v2, what WeatherBench2 reads)."""
    import os
    import shutil

    out = Path(out)
    if out.exists() and not force:
        raise DataError(f"{out} already exists", hint="pass --force to replace it, or choose another --out")
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
