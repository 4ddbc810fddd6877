"""Run configs: TOML loading, --section.key=value overrides, errors that name the file and key."""

from __future__ import annotations

import argparse

import pytest
import torch

from auroragpt.config import Config, load_config, save_resolved, total_steps
from auroragpt.errors import ConfigError

BASE = """
[model]
preset = "tiny"
n_layers = 2

[data]
synthetic = true
seq_len = 64
micro_batch = 2
global_batch = 8

[train]
steps = 10

[optim]
lr = 1e-3
warmup_steps = 2
"""


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_load_and_override_types(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["--train.steps=25", "optim.lr=2e-4", "--checkpoint.async_save=true",
                                              "--model.vocab_size=512"])
    assert cfg.model.n_layers == 2 and cfg.model.dim is None
    assert cfg.train.steps == 25 and cfg.optim.lr == 2e-4 and cfg.checkpoint.async_save is True
    assert cfg.model.vocab_size == 512 and isinstance(cfg.optim.warmup_steps, int)


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, BASE.replace("steps = 10", "steps = 10\nstepz = 3"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.stepz" in str(err.value)


def test_unknown_section_and_bad_types(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[trainer\]"):
        load_config(write(tmp_path, BASE + "\n[trainer]\nx = 1\n"))
    with pytest.raises(ConfigError, match="train.steps: expected int"):
        load_config(write(tmp_path, BASE), ["--train.steps=ten"])
    with pytest.raises(ConfigError, match="data.synthetic: expected true or false"):
        load_config(write(tmp_path, BASE), ["--data.synthetic=maybe"])
    with pytest.raises(ConfigError, match="optim.lr: expected float, got 'fast'"):
        load_config(write(tmp_path, BASE.replace("lr = 1e-3", 'lr = "fast"')))
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(write(tmp_path, BASE), ["--train.steps"])


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of train.steps and train.tokens"):
        load_config(write(tmp_path, BASE), ["--train.tokens=1000"])
    with pytest.raises(ConfigError, match="multiple of data.micro_batch"):
        load_config(write(tmp_path, BASE), ["--data.micro_batch=3"])
    with pytest.raises(ConfigError, match="optim.decay = 'cubic'"):
        load_config(write(tmp_path, BASE), ["--optim.decay=cubic"])
    with pytest.raises(ConfigError, match="data.file_list is empty"):
        load_config(write(tmp_path, BASE), ["--data.synthetic=false"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_tokens_become_steps(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["--train.steps=0", "--train.tokens=1025"])
    assert total_steps(cfg) == 3  # 8 x 64 = 512 tokens per step, rounded up


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["--run.name=with \"quotes\""])
    out = save_resolved(cfg, tmp_path / "run")
    again = load_config(out)
    assert again == cfg and isinstance(again, Config)


def test_cli_options_cover_every_key():
    from auroragpt.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", "x.toml", "--train.steps=3", "--optim.lr", "1e-3"])
    assert args.overrides == ["train.steps=3", "optim.lr=1e-3"]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--config", "x.toml", "--train.stepz=3"])


def test_meta_init_is_chosen_for_big_split_models_only():
    from auroragpt.model.presets import get_preset
    from auroragpt.parallel.layout import ParallelLayout
    from auroragpt.train.trainer import build_model, use_meta_init

    fsdp, alone = ParallelLayout(dp_shard=12, dp_replicate=64), ParallelLayout(dp_shard=1)
    assert use_meta_init("auto", get_preset("7b"), fsdp)
    assert not use_meta_init("auto", get_preset("7b"), alone)  # one device holds it all anyway
    assert not use_meta_init("auto", get_preset("tiny"), fsdp)
    assert use_meta_init("always", get_preset("tiny"), alone) and not use_meta_init("never", get_preset("7b"), fsdp)
    model = build_model(get_preset("7b"), torch.device("cpu"), seed=0, on_meta=True)  # no 28 GB allocated
    assert all(p.is_meta for p in model.parameters())


def test_meta_init_choice_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="meta_init"):
        load_config(write(tmp_path, BASE), ["--parallel.meta_init=sometimes"])


@pytest.mark.parametrize("override", ["--train.grad_clip=-1", "--train.spike_factor=0", "--train.spike_factor=-1",
                                      "--train.spike_warmup_steps=-2", "--train.max_skipped_in_a_row=0"])
def test_guard_and_clip_values_that_would_silently_misbehave_are_refused(tmp_path, override):
    with pytest.raises(ConfigError, match=override.split("=")[0][2:]):
        load_config(write(tmp_path, BASE), [override])
