"""The weather loader resumes exactly from a sample count and splits samples over ranks."""

from __future__ import annotations

import torch

from auroragpt.weather.dataset import load_arrays
from auroragpt.weather.objective import WeatherLoader


def test_loader_resumes_exactly_and_ranks_read_disjoint_samples(era5_zarr):
    arrays = load_arrays(era5_zarr, "geopotential500,2m_temperature", history=2)
    straight = iter(WeatherLoader(arrays, 0, 1, micro_batch=2, global_batch=4, seed=3))
    batches = [next(straight) for _ in range(6)]  # 3 steps of 2 micro batches
    resumed = iter(WeatherLoader(arrays, 0, 1, micro_batch=2, global_batch=4, seed=3, start_sample=8))
    for expected in batches[4:]:
        torch.testing.assert_close(next(resumed), expected, rtol=0, atol=0)
    r0 = WeatherLoader(arrays, 0, 2, micro_batch=2, global_batch=4, seed=3)
    r1 = WeatherLoader(arrays, 1, 2, micro_batch=2, global_batch=4, seed=3)
    assert {r0.time_index(i) for i in (0, 1)} | {r1.time_index(i) for i in (2, 3)} == {r0.time_index(i) for i in range(4)}
    torch.testing.assert_close(torch.cat([next(iter(r0)), next(iter(r1))]), torch.cat(batches[:2]))
    # every example's target is the normalised tendency of a training time followed by its successor
    assert all(arrays.times[r0.time_index(i)] < arrays.times[int(0.7 * len(arrays.times))] for i in range(40))


def test_netcdf_reads_like_zarr_and_stats_are_stored_once(era5_zarr, tmp_path):
    import json

    import xarray as xr

    from auroragpt.weather.dataset import STATS_ATTR

    nc = tmp_path / "era5.nc"
    xr.open_zarr(era5_zarr).load().to_netcdf(nc, engine="h5netcdf")
    a = load_arrays(era5_zarr, "geopotential500,temperature850")
    b = load_arrays(nc, "geopotential500,temperature850")
    torch.testing.assert_close(a.states, b.states)
    assert a.variables == ["geopotential500", "temperature850"]
    stored = json.loads(xr.open_zarr(era5_zarr).attrs[STATS_ATTR])  # written into the zarr on first use
    assert abs(stored["geopotential500"]["mean"] - 54000) < 100
    # normalised states have zero mean and unit std over the training split
    train = a.states[: int(0.7 * len(a.times))]
    assert train.mean().abs() < 0.05 and abs(train.std() - 1) < 0.05
