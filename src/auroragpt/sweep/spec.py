"""A sweep specification: a base config, fixed overrides, and axes of `section.key` values.

    base = "../configs/demo.toml"       # relative to this file
    dir = "sweeps/lr"                   # where trials, scripts and results go (relative to this file)
    method = "grid"                     # grid | random | optuna
    trials = 8                          # random and optuna: how many
    seed = 0                            # random: which draws
    metric = "loss"                     # from metrics.jsonl; the last value is the trial's result
    goal = "min"                        # min | max
    concurrent = 2                      # array tasks at a time (Slurm %K)
    launch = ["-n", "2"]                # `auroragpt launch` options per trial; [] runs one process
    [overrides]
    "train.steps" = 50
    [axes]
    "optim.lr" = [1e-3, 3e-3]           # a list: grid values, or random choices
    "optim.warmup_steps" = {min = 0, max = 40}          # random / optuna: an integer range
    "optim.weight_decay" = {min = 1e-3, max = 0.3, log = true}   # a float range
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from auroragpt.config import override_keys
from auroragpt.errors import ConfigError

METHODS = ("grid", "random", "optuna")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    path: Path
    base: Path
    dir: Path
    method: str
    axes: dict[str, Any]
    overrides: dict[str, Any]
    trials: int = 0
    seed: int = 0
    metric: str = "loss"
    goal: str = "min"
    concurrent: int = 0
    launch: tuple[str, ...] = ()


def _fail(path: Path, message: str, hint: str) -> ConfigError:
    return ConfigError(f"sweep spec {path}: {message}", hint=hint)


def _check_axis(path: Path, key: str, value: Any, method: str, known: set[str]) -> None:
    if key not in known:
        raise _fail(path, f"axis {key!r} is not a config key", "write axes as \"section.key\", e.g. \"optim.lr\"; "
                    "`auroragpt train --help` lists every key")
    if isinstance(value, list):
        if not value:
            raise _fail(path, f"axis {key!r} has no values", "give at least one value")
        return
    if isinstance(value, dict) and method != "grid":
        if set(value) - {"min", "max", "log"} or not {"min", "max"} <= set(value) or not value["min"] < value["max"]:
            raise _fail(path, f"axis {key!r} = {value!r} is not a range", "write {min = A, max = B[, log = true]} with A < B")
        return
    raise _fail(path, f"axis {key!r} = {value!r} cannot be swept by {method}",
                "give a list of values (a range {min, max} needs method random or optuna)")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; every mistake names the file and the field."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path} does not exist", hint="pass the path of a SPEC.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise _fail(path, f"is not valid TOML: {err}", "fix the syntax at the line named") from None
    allowed = {f.name for f in dataclasses.fields(SweepSpec)} - {"path"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(path, f"unknown field(s) {unknown}", f"known fields: {sorted(allowed)}")
    for name in ("base", "dir"):
        if not isinstance(raw.get(name), str):
            raise _fail(path, f"{name!r} is missing or not a path", f'add {name} = "..." (relative to the spec)')
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise _fail(path, f"method {method!r} is not known", f"choose one of {', '.join(METHODS)}")
    axes, overrides = raw.get("axes", {}), raw.get("overrides", {})
    if not axes:
        raise _fail(path, "[axes] is empty: nothing to sweep", 'add e.g. [axes] "optim.lr" = [1e-3, 3e-3]')
    known = {key for key, _ in override_keys()}
    for key, value in axes.items():
        _check_axis(path, key, value, method, known)
    for key in overrides:
        if key not in known:
            raise _fail(path, f"override {key!r} is not a config key", "write overrides as \"section.key\" = value")
    trials = raw.get("trials", 0)
    if method != "grid" and (not isinstance(trials, int) or trials < 1):
        raise _fail(path, f"method {method} needs trials >= 1, got {trials!r}", "add trials = N")
    if raw.get("goal", "min") not in ("min", "max"):
        raise _fail(path, f"goal {raw['goal']!r} is neither min nor max", 'write goal = "min" or "max"')
    base = (path.parent / raw["base"]).resolve()
    if not base.is_file():
        raise _fail(path, f"base config {base} does not exist", "point base at a training config (relative to the spec)")
    return SweepSpec(path, base, (path.parent / raw["dir"]).resolve(), method, dict(axes), dict(overrides),
                     trials, int(raw.get("seed", 0)), raw.get("metric", "loss"), raw.get("goal", "min"),
                     int(raw.get("concurrent", 0)), tuple(str(a) for a in raw.get("launch", [])))
