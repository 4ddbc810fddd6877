"""Run configuration: dataclass sections, loaded from TOML, with `--section.key=value` overrides.

One file describes a run. Every key is typed by its dataclass field, unknown keys are errors that
name the file and the key, and the fully-resolved config is written into the run directory so a
run can be reproduced (or resumed) from its own record.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auroragpt.errors import ConfigError


@dataclass
class ModelSection:
    """A preset from `auroragpt.model.presets` plus field overrides (None keeps the preset's value).

    vocab_size None also means: take it from the tokenizer when one is configured.
    """

    preset: str = "tiny"
    vocab_size: int | None = None
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    ffn_dim: int | None = None
    max_seq_len: int | None = None
    rope_theta: float | None = None
    norm_eps: float | None = None
    tie_embeddings: bool | None = None
    init_std: float | None = None


@dataclass
class ParallelSection:
    """The device mesh dp_replicate x dp_shard x tp x pp and how the model is spread over it.

    dp_shard = -1 means "whatever the world size leaves over". dp_shard > 1 uses FSDP2
    (hybrid sharding when dp_replicate > 1 too); dp_replicate alone uses DDP.
    """

    dp_replicate: int = 1
    dp_shard: int = -1
    tp: int = 1
    pp: int = 1
    pp_schedule: str = "1F1B"
    pp_microbatches: int = 0
    pp_virtual_stages: int = 1
    sequence_parallel: bool = True
    loss_parallel: bool = False
    activation_checkpointing: str = "none"
    compile: bool = False
    mixed_precision: str = "fp32"
    meta_init: str = "auto"  # build on the meta device, allocate only this rank's shard (see trainer.use_meta_init)
    # SWiPe, weather models only: wp ranks own tiles of windows (wp_lat tile rows in latitude x
    # wp / wp_lat columns in longitude), sp ranks share each tile's tokens (auroragpt.parallel.window)
    wp: int = 1
    wp_lat: int = 1
    sp: int = 1


@dataclass
class DataSection:
    """Where tokens come from: a data-file-list blended by `auroragpt.data.blend`, or synthetic
    random tokens (benchmarks and tests of the loop itself)."""

    file_list: str = ""
    tokenizer: str = ""
    synthetic: bool = False
    seq_len: int = 256
    micro_batch: int = 4
    global_batch: int = 8
    num_workers: int = 0
    valid_fraction: float = 0.01
    seed: int = 1234
    path: str = ""  # gridded dataset (zarr / netCDF) of a weather model; empty: sim.zarr


@dataclass
class TrainSection:
    """Length of the run and the step itself. Exactly one of steps / tokens decides the length."""

    steps: int = 0
    tokens: int = 0
    seed: int = 42
    grad_clip: float = 1.0
    spike_factor: float = 3.0
    spike_warmup_steps: int = 20
    max_skipped_in_a_row: int = 5
    objective: str = "pretrain"  # "sft" and "dpo" read [post] and data made by `data tokenize --format ...`


@dataclass
class OptimSection:
    """AdamW with decoupled weight decay (on matrices, not on norm gains or biases) and an LR schedule.

    decay_steps = 0 decays over the whole run after warmup."""

    lr: float = 3e-4
    min_lr: float = 3e-5
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 100
    decay: str = "cosine"
    decay_steps: int = 0


@dataclass
class CheckpointSection:
    """DCP checkpoints under RUN_DIR/checkpoints/step_XXXXXXXX/ every `every` steps (0: never) and,
    unless save_at_end is false (benchmarks), after the last step."""

    every: int = 0
    save_at_end: bool = True
    keep_last: int = 3
    async_save: bool = False
    resume: bool = True
    load_from: str = ""  # a checkpoint to continue from (model, optimizer, step) when the run has none of its own
    init_from: str = ""  # weights only (model folder, e.g. from `auroragpt import hf`, or checkpoint): fine-tuning


@dataclass
class MetricsSection:
    """Per-step JSON lines in RUN_DIR/metrics.jsonl; plots at the end; optional external loggers."""

    log_every: int = 1
    plots: bool = True
    wandb: bool = False
    tensorboard: bool = False
    project: str = "auroragpt"


@dataclass
class PostSection:
    """Post-training (train.objective = "sft" or "dpo"); see auroragpt.train.sft and .dpo.

    reference "live" keeps a frozen copy of the reference model; "precomputed" computes its
    log-probs once into a cache beside the data, keyed by digests, checked on load.
    reference_from "" means checkpoint.init_from."""

    loss: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    reference: str = "live"
    reference_from: str = ""
    reference_cache: str = ""
    check_fraction: float = 0.005
    pack: bool = False


@dataclass
class WeatherSection:
    """Weather models (model.preset = weather-*): which variables, how many past states, windows."""

    variables: str = ""  # comma-separated channel names (e.g. "z500,t850"); empty: every time-varying one
    history: int = 2
    window: int = 0  # square window size overriding the preset's (0: the preset's)


@dataclass
class RunSection:
    dir: str = "runs/demo"
    name: str = ""


@dataclass
class Config:
    """A whole run. Section names are the TOML table names."""

    model: ModelSection = field(default_factory=ModelSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    post: PostSection = field(default_factory=PostSection)
    run: RunSection = field(default_factory=RunSection)
    weather: WeatherSection = field(default_factory=WeatherSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


# The allowed values of string fields that select behaviour: one table, checked in `validate`.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("optim", "decay"): ("cosine", "linear", "constant"),
    ("parallel", "pp_schedule"): ("1F1B", "Interleaved1F1B", "GPipe"),
    ("parallel", "activation_checkpointing"): ("none", "full", "selective"),
    ("parallel", "mixed_precision"): ("fp32", "bf16"),
    ("parallel", "meta_init"): ("auto", "always", "never"),
    ("train", "objective"): ("pretrain", "sft", "dpo"),
    ("post", "loss"): ("sigmoid", "ipo", "hinge", "robust"),
    ("post", "reference"): ("live", "precomputed"),
}


def _section_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) for `int`, `int | None`, ..."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def coerce_value(value: Any, annotation: Any, where: str) -> Any:
    """Check (TOML values) or convert (override strings) one value to the field's type."""
    kind, nullable = _base_type(annotation)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if nullable and text.lower() in ("none", "null", ""):
            return None
        if kind is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        try:
            value = kind(float(text)) if kind is int and ("e" in text.lower()) else kind(text)
        except (ValueError, OverflowError):  # OverflowError: "inf" or "1e400" for an integer
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: a value is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if section not in sections:
        raise ConfigError(f"{source}: unknown section [{section}]", hint=f"sections are: {', '.join(sections)}")
    target = getattr(cfg, section)
    field_types = _section_types(type(target))
    if key not in field_types:
        raise ConfigError(
            f"{source}: unknown key {section}.{key}",
            hint=f"keys of [{section}] are: {', '.join(field_types)}",
        )
    setattr(target, key, coerce_value(value, field_types[key], f"{source}: {section}.{key}"))


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> Config:
    """Read a TOML file (or start from defaults when path is None) and apply `section.key=value`s."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist", hint="check the --config path") from None
        except IsADirectoryError:
            raise ConfigError(f"config {path} is a folder, not a TOML file", hint="pass a .toml file (see configs/)") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})",
                              hint="TOML files are UTF-8: save the file as UTF-8") from None
        except OSError as err:
            raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        for section, table in raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [table]", hint="put keys under [section] headers")
            for key, value in table.items():
                if isinstance(value, dict):
                    raise ConfigError(f"{path}: nested table {section}.{key} is not supported")
                _apply(cfg, section, key, value, str(path))
    for item in overrides or []:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def apply_override(cfg: Config, item: str) -> None:
    """Apply one `section.key=value` (a leading `--` is allowed)."""
    text = item[2:] if item.startswith("--") else item
    name, sep, value = text.partition("=")
    section, dot, key = name.partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"override {item!r} is not of the form --section.key=value", hint="for example --train.steps=100")
    _apply(cfg, section, key, value, "command line")


def validate(cfg: Config) -> None:
    """Every field's range and the relations that need no process group (auroragpt.config_rules
    owns the table; layout checks against the world size live in auroragpt.parallel)."""
    from auroragpt.config_rules import check_ranges

    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} = {value!r} is not one of {', '.join(allowed)}")
    check_ranges(cfg)
    d, t = cfg.data, cfg.train
    if (t.steps > 0) == (t.tokens > 0):
        raise ConfigError("set exactly one of train.steps and train.tokens (the run length)",
                          hint=f"got train.steps={t.steps}, train.tokens={t.tokens}")
    if not d.synthetic and not d.file_list and not cfg.model.preset.startswith("weather-"):
        raise ConfigError("data.file_list is empty", hint="point it at a data-file-list, or set data.synthetic=true")
    if t.objective == "dpo" and not (cfg.checkpoint.init_from or cfg.post.reference_from):
        raise ConfigError("train.objective = 'dpo' needs checkpoint.init_from (the model to align, also the reference)",
                          hint="point checkpoint.init_from at the SFT result (a checkpoint or model folder)")


def override_keys() -> list[tuple[str, str]]:
    """Every `section.key` a command line may override, with its type name (for CLI options)."""
    keys = []
    for section in dataclasses.fields(Config):
        for key, annotation in _section_types(section.default_factory).items():
            keys.append((f"{section.name}.{key}", _base_type(annotation)[0].__name__))
    return keys


def total_steps(cfg: Config) -> int:
    """The run length in optimizer steps (train.tokens is rounded up to whole global batches)."""
    if cfg.train.steps > 0:
        return cfg.train.steps
    tokens_per_step = cfg.data.global_batch * cfg.data.seq_len
    return -(-cfg.train.tokens // tokens_per_step)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML that `load_config` reads back (None fields are left out)."""
    lines = ["# Fully-resolved run configuration written by auroragpt train."]
    for section, table in cfg.to_dict().items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None)
    return "\n".join(lines) + "\n"


def save_resolved(cfg: Config, run_dir: str | os.PathLike[str]) -> Path:
    """Write RUN_DIR/config.toml atomically (temp name, then rename)."""
    from auroragpt.atomic import write_atomically

    return write_atomically(Path(run_dir) / "config.toml", to_toml(cfg))


def config_from_dict(data: dict[str, dict[str, Any]], source: str = "saved config") -> Config:
    """Rebuild a Config from `Config.to_dict()` output (checkpoint metadata)."""
    cfg = Config()
    for section, table in data.items():
        for key, value in table.items():
            _apply(cfg, section, key, value, source)
    return cfg
