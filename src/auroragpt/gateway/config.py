"""gateway.toml: [gateway], [[sites]] and [[models]], validated into one `GatewayConfig`.

Every problem is one ConfigError naming the file, the table and the field, and what to write.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auroragpt.errors import ConfigError

SCHEDULERS = ("local", "slurm", "pbs")
ENGINES = ("auroragpt", "vllm")


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys_file: str | None = None
    allow_no_auth: bool = False
    rate_limit_rps: float = 0.0
    rate_limit_tpm: float = 0.0
    idle_timeout_s: float = 600.0
    start_timeout_s: float = 600.0
    poll_interval_s: float = 1.0
    state_dir: str = "gateway-state"
    max_body_bytes: int = 1 << 20
    max_file_bytes: int = 64 << 20  # largest batch input file uploaded to /v1/files


@dataclass
class Site:
    name: str
    scheduler: str
    submit_args: list[str] = field(default_factory=list)
    max_jobs: int | None = None
    python: str | None = None  # interpreter on the compute nodes (default: the gateway's)
    walltime_s: float | None = None  # job lifetime: a job is replaced renew_before_s before it ends
    renew_before_s: float = 300.0  # must cover a replacement's queue wait and model loading


@dataclass
class ModelSpec:
    name: str
    path: str
    sites: list[str]
    min_replicas: int = 0
    max_replicas: int = 1
    engine: str = "auroragpt"
    serve_args: list[str] = field(default_factory=list)  # extra `auroragpt serve` flags (--dtype, --device ...)
    scale_up_outstanding: int = 8  # add a replica when every replica has this many requests in flight
    # a batch job serves with serve_args + batch_serve_args (later flags win: more slots for throughput)
    # and is submitted with the site's submit_args + batch_submit_args (e.g. a longer --time, a bigger node)
    batch_serve_args: list[str] = field(default_factory=lambda: ["--max-batch", "32"])
    batch_submit_args: list[str] = field(default_factory=list)


@dataclass
class GatewayConfig:
    gateway: GatewaySettings
    sites: dict[str, Site]
    models: dict[str, ModelSpec]
    path: Path

    @property
    def state_dir(self) -> Path:
        folder = Path(self.gateway.state_dir)
        return folder if folder.is_absolute() else self.path.parent / folder


_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list of strings"}


def _fill(target: Any, table: dict, where: str) -> None:
    """Copy the table's keys onto the dataclass instance, checking names and types."""
    fields = target.__dataclass_fields__
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}", hint=f"keys of this table are: {', '.join(fields)}")
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(
            str(fields[key].type).split(" |")[0].replace("list[str]", "list"), list)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"{where}: {key} = {value!r} must be {_TYPES[kind]}", hint=f"fix {key} in that table")
        setattr(target, key, value)


def _table_list(raw: dict, name: str, path: Path) -> list[dict]:
    items = raw.get(name, [])
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise ConfigError(f"{path}: {name} must be an array of tables", hint=f"write each entry under a [[{name}]] header")
    return items


def _site(table: dict, index: int, path: Path) -> Site:
    where = f"{path}: [[sites]] #{index + 1}"
    for required in ("name", "scheduler"):
        if required not in table:
            raise ConfigError(f"{where} has no {required!r}", hint=f"add {required} = \"...\" to that table")
    site = Site(name="", scheduler="")
    _fill(site, table, where)
    if site.scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}: scheduler = {site.scheduler!r} is not one of {', '.join(SCHEDULERS)}",
                          hint="use \"local\" for processes on this machine, \"slurm\" or \"pbs\" for batch jobs")
    if site.max_jobs is not None and site.max_jobs < 1:
        raise ConfigError(f"{where}: max_jobs must be at least 1", hint="leave it out for no limit")
    return site


def _model(table: dict, index: int, path: Path, sites: dict[str, Site]) -> ModelSpec:
    where = f"{path}: [[models]] #{index + 1}"
    for required in ("name", "path"):
        if required not in table:
            raise ConfigError(f"{where} has no {required!r}", hint=f"add {required} = \"...\" to that table")
    table = dict(table)
    site = table.pop("site", None)
    if site is not None and "sites" in table:
        raise ConfigError(f"{where}: give either site or sites, not both")
    if isinstance(site, str):
        table["sites"] = [site]
    elif site is not None:
        table["sites"] = site
    spec = ModelSpec(name="", path="", sites=[])
    _fill(spec, table, where)
    if not spec.sites:
        if len(sites) != 1:
            raise ConfigError(f"{where}: model {spec.name!r} names no site", hint="add site = \"NAME\" of a [[sites]] table")
        spec.sites = list(sites)
    for name in spec.sites:
        if name not in sites:
            raise ConfigError(f"{where}: site {name!r} is not defined", hint=f"defined sites: {', '.join(sites) or 'none'}")
    if spec.engine not in ENGINES:
        raise ConfigError(f"{where}: engine = {spec.engine!r} is not one of {', '.join(ENGINES)}")
    if not 0 <= spec.min_replicas <= spec.max_replicas or spec.max_replicas < 1:
        raise ConfigError(f"{where}: need 0 <= min_replicas <= max_replicas and max_replicas >= 1 "
                          f"(got {spec.min_replicas} and {spec.max_replicas})")
    model_path = Path(spec.path) if Path(spec.path).is_absolute() else path.parent / spec.path
    if not model_path.exists():
        raise ConfigError(f"{where}: path {spec.path} does not exist", hint="give a checkpoint, run, model or HF folder")
    spec.path = str(model_path.resolve())
    return spec


def load_gateway_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate gateway.toml."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="check the --config path") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for key in raw:
        if key not in ("gateway", "sites", "models"):
            raise ConfigError(f"{path}: unknown top-level table {key!r}", hint="use [gateway], [[sites]] and [[models]]")
    settings = GatewaySettings()
    _fill(settings, raw.get("gateway", {}), f"{path}: [gateway]")
    for name in ("idle_timeout_s", "start_timeout_s", "poll_interval_s"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{path}: [gateway] {name} must be positive")
    sites: dict[str, Site] = {}
    for i, table in enumerate(_table_list(raw, "sites", path)):
        site = _site(table, i, path)
        if site.name in sites:
            raise ConfigError(f"{path}: [[sites]] #{i + 1}: site {site.name!r} is defined twice")
        sites[site.name] = site
    if not sites:
        raise ConfigError(f"{path}: no [[sites]]", hint="add [[sites]] with name and scheduler = \"local\", \"slurm\" or \"pbs\"")
    models: dict[str, ModelSpec] = {}
    for i, table in enumerate(_table_list(raw, "models", path)):
        spec = _model(table, i, path, sites)
        if spec.name in models:
            raise ConfigError(f"{path}: [[models]] #{i + 1}: model {spec.name!r} is defined twice")
        models[spec.name] = spec
    if not models:
        raise ConfigError(f"{path}: no [[models]]", hint="add [[models]] with name, path and site")
    return GatewayConfig(settings, sites, models, path)
