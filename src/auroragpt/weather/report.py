"""`auroragpt weather score`: a forecast against the truth, per variable and lead time, with the
baselines (persistence, climatology), a JSON table and PNG plots (maps, scores vs lead, spectra,
rank histograms, vortex tracks)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from auroragpt.errors import DataError
from auroragpt.weather import scores
from auroragpt.weather.dataset import channel, latitude_weights, open_dataset, split_indices
from auroragpt.weather.tracks import track_errors


def truth_fields(truth_ds, name: str, valid_times: np.ndarray) -> np.ndarray:
    """The truth at the forecast's valid times [init, lead, H, W] (refused when outside the dataset)."""
    da = channel(truth_ds, name).transpose("time", "latitude", "longitude")
    flat = valid_times.ravel().astype("datetime64[ns]")
    have = np.isin(flat, truth_ds["time"].values.astype("datetime64[ns]"))
    if not have.all():
        raise DataError(f"the truth has no {name} at valid time {flat[~have][0]}",
                        hint="score forecasts whose lead times stay inside the truth's period")
    return da.sel(time=flat).values.reshape(*valid_times.shape, *da.shape[1:])


def score_variable(fc, truth_ds, name: str, lat_w: np.ndarray) -> dict:
    ens = fc[name].transpose("init_time", "lead_time", "member", "latitude", "longitude").values.astype(np.float64)
    truth = truth_fields(truth_ds, name, fc["valid_time"].values)
    init = truth_fields(truth_ds, name, fc["init_time"].values[:, None])  # persistence
    train = split_indices(truth_ds, "train")
    clim = channel(truth_ds, name).isel(time=train).mean("time").values
    rms = lambda x: np.sqrt(np.mean(np.square(x), axis=0))  # noqa: E731  (over init times)
    ens_rmse = rms(scores.ensemble_mean_rmse(ens, truth, lat_w))
    m = ens.shape[2]
    spread = rms(scores.spread(ens, lat_w)) if m > 1 else np.zeros_like(ens_rmse)
    return {
        "rmse": ens_rmse.tolist(),
        "persistence_rmse": rms(scores.rmse(np.broadcast_to(init, truth.shape), truth, lat_w)).tolist(),
        "climatology_rmse": rms(scores.rmse(np.broadcast_to(clim, truth.shape), truth, lat_w)).tolist(),
        "acc": scores.acc(ens.mean(axis=2), truth, clim, lat_w).mean(axis=0).tolist(),
        "crps": scores.fair_crps(ens, truth, lat_w).mean(axis=0).tolist() if m > 1 else None,
        "spread": spread.tolist(),
        "spread_skill": (np.sqrt((m + 1) / m) * spread / ens_rmse).tolist() if m > 1 else None,
        "rank_histogram": scores.rank_histogram(ens.reshape(-1, m, *ens.shape[-2:]), truth.reshape(-1, *truth.shape[-2:])).tolist(),
        "_arrays": (ens, truth, clim),
    }


def score_command(args: argparse.Namespace) -> int:
    from auroragpt.atomic import write_atomically

    fc, truth_ds = open_dataset(args.forecast), open_dataset(args.truth)
    for dim in ("member", "lead_time", "init_time", "latitude", "longitude"):
        if dim not in fc.dims:
            raise DataError(f"{args.forecast} has no {dim!r} dimension: not a forecast from `auroragpt weather forecast`")
    names = [str(v) for v in fc.data_vars]
    lat_w = latitude_weights(fc["latitude"].values)
    lead_hours = (fc["lead_time"].values / np.timedelta64(1, "h")).tolist()
    table = {"lead_hours": lead_hours, "members": int(fc.sizes["member"]), "init_times": [str(t) for t in fc["init_time"].values],
             "variables": {n: score_variable(fc, truth_ds, n, lat_w) for n in names}}
    track_var = args.track_variable or ("z500" if "z500" in names else names[0])
    arrays = {n: table["variables"][n].pop("_arrays") for n in names}
    ens, truth, _ = arrays[track_var]
    init_field = truth_fields(truth_ds, track_var, fc["init_time"].values[:1])[0]
    tr = track_errors(np.moveaxis(ens[0], 1, 0), truth[0], init_field, fc["latitude"].values, fc["longitude"].values)
    table["track"] = {"variable": track_var, "start": list(tr["start"]),
                      "member_error_km": tr["member_error_km"].tolist(), "ensemble_mean_error_km": tr["ensemble_mean_error_km"].tolist()}
    out = Path(args.output)
    write_atomically(out, json.dumps(table, indent=1))
    pngs = write_plots(out.with_suffix(""), table, arrays, tr, fc)
    fc.close()
    truth_ds.close()
    print(format_table(table))
    print(f"wrote {out} and {', '.join(p.name for p in pngs)}")
    return 0


def format_table(table: dict) -> str:
    lines = [f"{'variable':<10}{'lead h':>7}{'rmse':>11}{'persist':>11}{'clim':>11}{'acc':>7}{'crps':>10}{'spr/skl':>8}"]
    for name, s in table["variables"].items():
        for i, lead in enumerate(table["lead_hours"]):
            crps = f"{s['crps'][i]:10.4g}" if s["crps"] else f"{'-':>10}"
            ss = f"{s['spread_skill'][i]:8.2f}" if s["spread_skill"] else f"{'-':>8}"
            lines.append(f"{name:<10}{lead:>7.0f}{s['rmse'][i]:>11.4g}{s['persistence_rmse'][i]:>11.4g}"
                         f"{s['climatology_rmse'][i]:>11.4g}{s['acc'][i]:>7.3f}{crps}{ss}")
    return "\n".join(lines)


def write_plots(stem: Path, table: dict, arrays: dict, tr: dict, fc) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, leads = list(table["variables"]), table["lead_hours"]
    paths = []
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 6), squeeze=False)
    for j, n in enumerate(names):
        s = table["variables"][n]
        ax = axes[0, j]
        ax.plot(leads, s["rmse"], "o-", label="ensemble mean")
        ax.plot(leads, s["persistence_rmse"], "s--", label="persistence")
        ax.plot(leads, s["climatology_rmse"], ":", label="climatology")
        if s["spread"]:
            ax.plot(leads, s["spread"], "^-", label="spread")
        ax.set_title(f"{n} RMSE")
        ax.set_xlabel("lead (h)")
        ax.legend(fontsize=7, loc="upper left")
        axes[1, j].plot(leads, s["acc"], "o-", label="ACC")
        if s["crps"]:
            ax2 = axes[1, j].twinx()
            ax2.plot(leads, s["crps"], "r^-", label="fair CRPS")
            ax2.set_ylabel("CRPS", color="r")
        axes[1, j].set_xlabel("lead (h)")
        axes[1, j].set_title(f"{n} ACC / CRPS")
    fig.tight_layout()
    paths.append(_save(fig, stem.with_name(stem.name + "_vs_lead.png")))

    n = names[0]
    ens, truth, _ = arrays[n]
    last = len(leads) - 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    for ax, field, title in zip(axes, (truth[0, last], ens[0, last].mean(0), ens[0, last].std(0)),
                                ("truth", "ensemble mean", "ensemble spread")):
        im = ax.imshow(field, extent=[0, 360, -90, 90], aspect="auto", cmap="viridis")
        ax.set_title(f"{n} {title}, lead {leads[last]:.0f} h")
        fig.colorbar(im, ax=ax)
    paths.append(_save(fig, stem.with_name(stem.name + "_maps.png")))

    lat_w = latitude_weights(fc["latitude"].values)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(scores.zonal_power_spectrum(truth[0, last], lat_w)[1:], label="truth")
    ax.loglog(scores.zonal_power_spectrum(ens[0, last, 0], lat_w)[1:], label="member 0")
    ax.loglog(scores.zonal_power_spectrum(ens[0, last].mean(0), lat_w)[1:], label="ensemble mean")
    ax.set_xlabel("zonal wavenumber")
    ax.set_title(f"{n} spectra, lead {leads[last]:.0f} h")
    ax.legend(loc="lower left")
    paths.append(_save(fig, stem.with_name(stem.name + "_spectra.png")))

    fig, ax = plt.subplots(figsize=(5, 4))
    hist = np.array(table["variables"][n]["rank_histogram"], dtype=float)
    ax.bar(np.arange(len(hist)), hist / hist.sum())
    ax.set_title(f"{n} rank histogram")
    paths.append(_save(fig, stem.with_name(stem.name + "_rank_histogram.png")))

    lat, lon = fc["latitude"].values, fc["longitude"].values
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m_track in tr["members"]:
        axes[0].plot(lon[m_track[:, 1]], lat[m_track[:, 0]], "-", color="tab:blue", alpha=0.4)
    axes[0].plot(lon[tr["truth"][:, 1]], lat[tr["truth"][:, 0]], "k-o", label="truth")
    axes[0].set_xlabel("longitude")
    axes[0].set_ylabel("latitude")
    axes[0].set_title(f"vortex tracks ({table['track']['variable']} low)")
    axes[0].legend(loc="upper left")
    axes[1].plot(leads, table["track"]["member_error_km"], "o-", label="members (mean)")
    axes[1].plot(leads, table["track"]["ensemble_mean_error_km"], "s-", label="ensemble-mean field")
    axes[1].set_xlabel("lead (h)")
    axes[1].set_ylabel("track error (km)")
    axes[1].legend(loc="upper left")
    paths.append(_save(fig, stem.with_name(stem.name + "_tracks.png")))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
