"""Autoregressive ensemble forecasts from a training checkpoint, in WeatherBench2's layout.

Each member m draws from its own generator seeded with seed + m: a member is reproduced by its
seed alone. A step samples the normalised tendency given the member's own previous states, the
static fields and the insolation at the valid time, and adds it to the current state.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from auroragpt.errors import ConfigError, DataError
from auroragpt.log import get_logger
from auroragpt.weather.dataset import WeatherArrays, load_arrays, normalised_insolation, write_zarr_atomically
from auroragpt.weather.diffusion import sample
from auroragpt.weather.model import SwinDenoiser, WeatherModelConfig

log = get_logger(__name__)


def load_weather_model(path: str | Path) -> tuple[SwinDenoiser, dict]:
    """The denoiser of a weather run's checkpoint (run dir: its latest), eval mode, on CPU."""
    import torch.distributed.checkpoint as dcp

    from auroragpt.train.checkpoint import CheckpointError, read_meta, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    preset = meta.get("config", {}).get("model", {}).get("preset", "")
    if not preset.startswith("weather-"):
        raise CheckpointError(f"{ckpt} holds a {preset or 'non-weather'} model, not a weather model")
    cfg = WeatherModelConfig.from_dict(meta["model_config"], source=str(ckpt / "meta.json"))
    model = SwinDenoiser(cfg)
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
    model.load_state_dict(state["model"])
    return model.eval(), {**meta, "checkpoint": str(ckpt)}


def init_indices(arrays: WeatherArrays, text: str) -> list[int]:
    """Dataset time indices of the comma-separated --init times (exact matches)."""
    found = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            when = np.datetime64(item, "s")
        except ValueError:
            raise ConfigError(f"--init {item!r} is not an ISO time (e.g. 2000-06-01T00)") from None
        hits = np.nonzero(arrays.times.astype("datetime64[s]") == when)[0]
        if len(hits) == 0:
            raise DataError(f"--init {item} is not a time of the dataset",
                            hint=f"its times run from {arrays.times[0]} to {arrays.times[-1]} every {time_step(arrays)}")
        found.append(int(hits[0]))
    if not found:
        raise ConfigError("--init names no time")
    return found


def time_step(arrays: WeatherArrays) -> np.timedelta64:
    return (arrays.times[1] - arrays.times[0]).astype("timedelta64[s]")


@torch.no_grad()
def rollout(net: SwinDenoiser, arrays: WeatherArrays, init: int, lead_steps: int, members: int, sampling_steps: int,
            eta: float, seed: int) -> torch.Tensor:
    """Normalised states [members, lead_steps, V, H, W] after init (lead 1 .. lead_steps)."""
    gens = [torch.Generator().manual_seed(seed + m) for m in range(members)]
    dt = time_step(arrays)
    past = [arrays.states[max(init - k, 0)] for k in range(arrays.history)]  # newest first
    history = [torch.stack([p] * members) for p in past]
    out = []
    for lead in range(lead_steps):
        valid = np.array([arrays.times[init] + (lead + 1) * dt])
        sun = torch.from_numpy(normalised_insolation(valid, arrays.lat, arrays.lon).astype(np.float32))
        cond = torch.cat(history + [arrays.static.expand(members, -1, -1, -1), sun.expand(members, 1, -1, -1)], dim=1)
        tendency = sample(net, cond, sampling_steps, gens, eta=eta)
        new = history[0] + tendency * arrays.diff_scale[None, :, None, None]
        history = [new] + history[:-1]
        out.append(new)
    return torch.stack(out, dim=1)


def forecast_dataset(net: SwinDenoiser, arrays: WeatherArrays, inits: list[int], lead_steps: int, members: int,
                     sampling_steps: int, eta: float, seed: int):
    """xarray Dataset: truth's variable names, dims (init_time, member, lead_time, latitude, longitude),
    coordinates init_time, lead_time and valid_time (init_time + lead_time)."""
    import xarray as xr

    dt = time_step(arrays)
    fields = np.zeros((len(inits), members, lead_steps, len(arrays.variables), len(arrays.lat), len(arrays.lon)), np.float32)
    for a, init in enumerate(inits):
        states = rollout(net, arrays, init, lead_steps, members, sampling_steps, eta, seed)
        fields[a] = np.stack([arrays.denormalise(s) for s in states.flatten(0, 1)]).reshape(fields.shape[1:])
    init_times = arrays.times[inits].astype("datetime64[ns]")
    leads = (np.arange(1, lead_steps + 1) * dt).astype("timedelta64[ns]")
    dims = ("init_time", "member", "lead_time", "latitude", "longitude")
    data = {v: (dims, fields[:, :, :, i]) for i, v in enumerate(arrays.variables)}
    coords = {"init_time": init_times, "member": np.arange(members), "lead_time": leads,
              "latitude": arrays.lat, "longitude": arrays.lon,
              "valid_time": (("init_time", "lead_time"), init_times[:, None] + leads[None, :])}
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(sampler="ode" if eta == 0 else f"stochastic eta={eta}", sampling_steps=sampling_steps, seed=seed,
                    members=members)
    return ds


def forecast_command(args: argparse.Namespace) -> int:
    if args.members < 1 or args.lead_steps < 1 or args.sampling_steps < 1:
        raise ConfigError("--members, --lead-steps and --sampling-steps must be >= 1")
    if not 0 <= args.eta <= 1:
        raise ConfigError(f"--eta must be in [0, 1], got {args.eta}")
    if Path(args.out).exists() and not args.force:
        raise DataError(f"{args.out} already exists", hint="pass --force to replace it, or choose another --out")
    net, meta = load_weather_model(args.checkpoint)
    cfg = meta["config"]
    path = args.data or cfg["data"].get("path") or "sim.zarr"
    arrays = load_arrays(path, cfg["weather"]["variables"], cfg["weather"]["history"])
    if (len(arrays.variables), arrays.n_cond, *arrays.states.shape[-2:]) != (net.cfg.n_vars, net.cfg.n_cond, net.cfg.grid_h, net.cfg.grid_w):
        raise DataError(f"{path} does not fit the checkpoint's model ({net.cfg.n_vars} variables, {net.cfg.n_cond} "
                        f"conditioning channels, grid {net.cfg.grid_h}x{net.cfg.grid_w})", hint="forecast from the dataset the model was trained on")
    inits = init_indices(arrays, args.init)
    ds = forecast_dataset(net, arrays, inits, args.lead_steps, args.members, args.sampling_steps, args.eta, args.seed)
    ds.attrs["checkpoint"] = meta["checkpoint"]
    out = write_zarr_atomically(ds, args.out, args.force)
    print(f"wrote {out}: {len(inits)} init time(s) x {args.members} members x {args.lead_steps} lead steps, "
          f"variables {', '.join(arrays.variables)}")
    return 0
