"""The range of every numeric config field and the batch arithmetic, in one table the config owns.

`auroragpt.config.validate` calls `check_ranges` before anything else looks at a value, so a
value that would only fail later (a zero rope_theta making every loss NaN, a negative
checkpoint interval that silently never saves) is refused with the field's name and its allowed
range before any model, process group or file exists. `grad_accum_steps` is the one place that
splits a global batch into micro batches per data-parallel rank; the layout check and the
loader call it instead of repeating the division.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from auroragpt.errors import ConfigError

# Integers beyond this do not fit the int64 the tensors, RNG seeds and TOML files use.
INT_LIMIT = 2**63

# (section, key) -> (low, low_inclusive, high, high_inclusive, what the value means).
# None as a bound: no bound on that side. A None field value (keep the preset's) is always allowed.
RANGES: dict[tuple[str, str], tuple[float | None, bool, float | None, bool, str]] = {
    ("model", "vocab_size"): (1, True, None, False, "tokens in the vocabulary"),
    ("model", "dim"): (1, True, None, False, "the model width"),
    ("model", "n_layers"): (1, True, None, False, "transformer blocks"),
    ("model", "n_heads"): (1, True, None, False, "attention heads"),
    ("model", "n_kv_heads"): (1, True, None, False, "key/value heads"),
    ("model", "ffn_dim"): (1, True, None, False, "the MLP width"),
    ("model", "max_seq_len"): (1, True, None, False, "the longest sequence the rotary table covers"),
    ("model", "rope_theta"): (0, False, None, False, "the rotary base (10000 in Llama 2)"),
    ("model", "norm_eps"): (0, False, 1, False, "the RMSNorm epsilon (1e-5 is usual)"),
    ("model", "init_std"): (0, False, None, False, "the standard deviation of the initial weights"),
    ("parallel", "dp_replicate"): (1, True, None, False, "data-parallel replicas"),
    ("parallel", "dp_shard"): (-1, True, None, False, "FSDP shards (-1: fill the rest of the world)"),
    ("parallel", "tp"): (1, True, None, False, "tensor-parallel ranks"),
    ("parallel", "pp"): (1, True, None, False, "pipeline stages"),
    ("parallel", "pp_microbatches"): (0, True, None, False, "pipeline micro batches (0: one per stage)"),
    ("parallel", "pp_virtual_stages"): (1, True, None, False, "stages per pipeline rank"),
    ("parallel", "wp"): (1, True, None, False, "window-parallel ranks (tiles of a weather model's grid)"),
    ("parallel", "wp_lat"): (1, True, None, False, "rows of window-parallel tiles in latitude"),
    ("parallel", "sp"): (1, True, None, False, "sequence-parallel ranks inside a window tile"),
    ("data", "seq_len"): (1, True, None, False, "tokens per sample"),
    ("data", "micro_batch"): (1, True, None, False, "samples per forward pass"),
    ("data", "global_batch"): (1, True, None, False, "samples per optimizer step"),
    ("data", "num_workers"): (0, True, None, False, "loader worker processes"),
    ("data", "valid_fraction"): (0, True, 1, False, "the share of documents held out"),
    ("data", "seed"): (0, True, None, False, "the blend's seed"),
    ("train", "steps"): (0, True, None, False, "optimizer steps (0: use train.tokens)"),
    ("train", "tokens"): (0, True, None, False, "training tokens (0: use train.steps)"),
    ("train", "seed"): (0, True, None, False, "the initialisation seed"),
    ("train", "grad_clip"): (0, True, None, False, "the gradient-norm clip (0 turns clipping off)"),
    ("train", "spike_factor"): (1, False, None, False, "how many times the running average loss a step may reach"),
    ("train", "spike_warmup_steps"): (0, True, None, False, "good steps before the spike check starts"),
    ("train", "max_skipped_in_a_row"): (1, True, None, False, "skipped steps in a row that stop the run"),
    ("optim", "lr"): (0, False, None, False, "the peak learning rate"),
    ("optim", "min_lr"): (0, True, None, False, "the final learning rate"),
    ("optim", "weight_decay"): (0, True, None, False, "AdamW's decoupled weight decay"),
    ("optim", "beta1"): (0, True, 1, False, "AdamW's first-moment decay"),
    ("optim", "beta2"): (0, True, 1, False, "AdamW's second-moment decay"),
    ("optim", "eps"): (0, False, None, False, "AdamW's denominator epsilon"),
    ("optim", "warmup_steps"): (0, True, None, False, "linear warm-up steps"),
    ("optim", "decay_steps"): (0, True, None, False, "decay steps (0: the rest of the run)"),
    ("checkpoint", "every"): (0, True, None, False, "steps between checkpoints (0: only at the end)"),
    ("checkpoint", "keep_last"): (1, True, None, False, "checkpoints kept"),
    ("metrics", "log_every"): (1, True, None, False, "steps between metric records"),
    ("post", "beta"): (0, False, None, False, "the DPO temperature on the log-ratio"),
    ("post", "label_smoothing"): (0, True, 0.5, False, "the robust-DPO label-flip probability"),
    ("post", "rpo_alpha"): (0, True, None, False, "the weight of the SFT term on chosen (RPO)"),
    ("weather", "history"): (1, True, None, False, "past states the weather model is conditioned on"),
    ("weather", "window"): (0, True, None, False, "the attention window's side (0: the preset's)"),
    ("post", "check_fraction"): (0, True, 1, True, "the share of cached reference log-probs recomputed on load"),
}


def describe_range(low: float | None, low_incl: bool, high: float | None, high_incl: bool) -> str:
    """'> 0', '>= 1', 'in [0, 1)' ..."""
    if low is not None and high is not None:
        return f"in {'[' if low_incl else '('}{low:g}, {high:g}{']' if high_incl else ')'}"
    if low is not None:
        return f"{'>=' if low_incl else '>'} {low:g}"
    if high is not None:
        return f"{'<=' if high_incl else '<'} {high:g}"
    return "any number"


def _inside(value: float, low: float | None, low_incl: bool, high: float | None, high_incl: bool) -> bool:
    if low is not None and (value < low or (value == low and not low_incl)):
        return False
    return high is None or value < high or (value == high and high_incl)


def check_ranges(cfg: Any) -> None:
    """Every numeric field of `cfg` (a Config) finite, in int64, and inside its RANGES entry."""
    for section in dataclasses.fields(cfg):
        table = getattr(cfg, section.name)
        for item in dataclasses.fields(table):
            value = getattr(table, item.name)
            name = f"{section.name}.{item.name}"
            if value is None or isinstance(value, (bool, str)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
                raise ConfigError(f"{name} = {value} does not fit in a 64-bit integer",
                                  hint=f"use a value below 2**63 for {name}")
            rule = RANGES.get((section.name, item.name))
            if rule is None:
                continue
            low, low_incl, high, high_incl, meaning = rule
            if not _inside(value, low, low_incl, high, high_incl):
                raise ConfigError(f"{name} = {value!r} is out of range: it is {meaning} and must be "
                                  f"{describe_range(low, low_incl, high, high_incl)}",
                                  hint=f"set {name} to a value {describe_range(low, low_incl, high, high_incl)}")
    if cfg.parallel.dp_shard == 0:
        raise ConfigError("parallel.dp_shard = 0 is out of range: it must be >= 1, or -1 to fill the rest of the world",
                          hint="set parallel.dp_shard to -1 (fill the rest) or a positive size")
    _check_relations(cfg)


def _check_relations(cfg: Any) -> None:
    """Relations between fields that need no preset, tokenizer or world size."""
    m, d = cfg.model, cfg.data
    if m.max_seq_len is not None and d.seq_len > m.max_seq_len:
        raise ConfigError(f"data.seq_len ({d.seq_len}) is longer than model.max_seq_len ({m.max_seq_len}): "
                          "the model has no positions past max_seq_len",
                          hint=f"set model.max_seq_len >= {d.seq_len}, or leave it unset to follow data.seq_len")
    if m.n_heads is not None and m.n_kv_heads is not None and m.n_heads % m.n_kv_heads:
        raise ConfigError(f"model.n_heads ({m.n_heads}) must be a multiple of model.n_kv_heads ({m.n_kv_heads})",
                          hint="grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads")
    if m.dim is not None and m.n_heads is not None and m.dim % m.n_heads:
        raise ConfigError(f"model.dim ({m.dim}) must be divisible by model.n_heads ({m.n_heads})",
                          hint="pick n_heads so that dim / n_heads is the head size you want (64 or 128 are usual)")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(f"optim.min_lr ({cfg.optim.min_lr}) is above optim.lr ({cfg.optim.lr})",
                          hint="the schedule decays from lr down to min_lr: set min_lr <= lr")
    grad_accum_steps(d.global_batch, d.micro_batch, 1)


def grad_accum_steps(global_batch: int, micro_batch: int, dp: int, *, dp_detail: str = "") -> int:
    """Micro batches each of `dp` data-parallel ranks accumulates per optimizer step.

    The one owner of the rule "global_batch = micro_batch x dp x accumulation steps": the config
    (dp = 1), the layout (its dp) and the loader all ask here.
    """
    for name, value in (("data.global_batch", global_batch), ("data.micro_batch", micro_batch), ("data-parallel size", dp)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    per_step = micro_batch * dp
    if global_batch % per_step:
        ranks = f" x data-parallel ranks ({dp_detail or dp})" if dp != 1 else ""
        raise ConfigError(
            f"data.global_batch ({global_batch}) is not a multiple of data.micro_batch ({micro_batch}){ranks}"
            + (f" = {per_step}" if dp != 1 else ""),
            hint=f"make data.global_batch a multiple of {per_step}; the quotient is the number of "
            "gradient-accumulation steps",
        )
    return global_batch // per_step
