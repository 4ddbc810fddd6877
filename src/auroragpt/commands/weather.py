"""`auroragpt weather simulate | forecast | score`: data, ensemble forecasts and their skill.

Training goes through `auroragpt train --config configs/weather-demo.toml` like any model.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weather", help="weather models: simulate data, ensemble forecasts, scores",
                                   description="Weather models (AERIS-style Swin diffusion): simulate an ERA5-shaped dataset, "
                                   "forecast ensembles from a checkpoint, score them WeatherBench2-style.")
    sub = parser.add_subparsers(dest="weather_command", metavar="SUBCOMMAND")

    sim = sub.add_parser("simulate", help="run the embedded barotropic-vorticity model and write an ERA5-shaped zarr")
    sim.add_argument("--out", default="sim.zarr", help="output zarr store (default sim.zarr)")
    sim.add_argument("--grid", default="32x64", help="LATxLON grid points (default 32x64)")
    sim.add_argument("--days", type=float, default=200.0, help="simulated days written after the spin-up (default 200)")
    sim.add_argument("--every-hours", type=float, default=6.0, help="hours between stored states (default 6)")
    sim.add_argument("--spinup-days", type=float, default=30.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--force", action="store_true", help="replace an existing --out")
    sim.set_defaults(func=run_simulate)

    fc = sub.add_parser("forecast", help="autoregressive ensemble forecast in WeatherBench2 layout")
    fc.add_argument("checkpoint", help="run directory or RUN/checkpoints/step_XXXXXXXX")
    fc.add_argument("--init", required=True, help="initial time(s), ISO, comma-separated (e.g. 2000-06-01T00)")
    fc.add_argument("--lead-steps", type=int, default=8, help="autoregressive steps (dataset time steps)")
    fc.add_argument("--members", type=int, default=8)
    fc.add_argument("--out", default="fc.zarr")
    fc.add_argument("--data", default="", help="dataset for initial states and forcings (default: the run's data.path)")
    fc.add_argument("--sampling-steps", type=int, default=20, help="diffusion steps per forecast step (fewer: under-dispersed)")
    fc.add_argument("--eta", type=float, default=0.0, help="0: deterministic ODE sampler; (0, 1]: stochastic")
    fc.add_argument("--seed", type=int, default=0, help="member m draws from seed + m")
    fc.add_argument("--force", action="store_true")
    fc.set_defaults(func=run_forecast)

    sc = sub.add_parser("score", help="scores of a forecast against the truth, with plots")
    sc.add_argument("forecast", help="fc.zarr from `auroragpt weather forecast`")
    sc.add_argument("--truth", required=True, help="the dataset (e.g. sim.zarr)")
    sc.add_argument("--output", default="score.json", help="JSON table; PNG plots go next to it")
    sc.add_argument("--track-variable", default="", help="field whose extremum is tracked (default: z500 if present)")
    sc.set_defaults(func=run_score)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def parse_grid(text: str) -> tuple[int, int]:
    from auroragpt.errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 4 or w < 4 or h % 2:
            raise ValueError
        return h, w
    except ValueError:
        raise ConfigError(f"--grid {text!r} is not LATxLON with an even LAT >= 4 (e.g. 32x64)") from None


def run_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auroragpt.atomic import check_creatable
    from auroragpt.errors import ConfigError, DataError
    from auroragpt.weather.simulate import simulate, write_dataset

    h, w = parse_grid(args.grid)
    if args.days <= 0 or args.every_hours <= 0 or args.spinup_days < 0:
        raise ConfigError("--days and --every-hours must be positive and --spinup-days >= 0")
    if Path(args.out).exists() and not args.force:
        raise DataError(f"{args.out} already exists", hint="pass --force to replace it, or choose another --out")
    check_creatable(args.out, "--out")  # before minutes of simulation, not after
    ds = simulate(h, w, args.days, args.every_hours, args.spinup_days, args.seed, progress=terminal_progress("simulate"))
    out = write_dataset(ds, args.out, force=args.force)
    print(f"wrote {out}: {ds.sizes['time']} times x {h}x{w}, variables {', '.join(ds.data_vars)}")
    return 0


def terminal_progress(label: str):
    """A progress callback that redraws one line on a terminal and stays quiet in logs."""
    import sys

    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label}: {done}/{total} ({100 * done // total}%)", end=end, file=sys.stderr, flush=True)

    return show


def run_forecast(args: argparse.Namespace) -> int:
    from auroragpt.weather.forecast import forecast_command

    return forecast_command(args)


def run_score(args: argparse.Namespace) -> int:
    from auroragpt.weather.report import score_command

    return score_command(args)
