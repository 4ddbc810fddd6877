"""Inputs that used to end in a traceback (exit 1): each is now one paragraph with exit code 2."""

from __future__ import annotations

import json
import re

import pytest

from auroragpt.cli import main

CONFIG = """
[model]
preset = "tiny"
n_layers = 1

[data]
synthetic = true
seq_len = 16
micro_batch = 2
global_batch = 4

[train]
steps = 1
"""


@pytest.fixture(autouse=True)
def _fresh_log_handler():
    """The CLI attaches its log handler to the stderr of the moment; pytest swaps stderr per test."""
    import logging

    logger = logging.getLogger("auroragpt")
    saved = list(logger.handlers)
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved


def _one_paragraph(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n\n") == 0, err
    for needle in needles:
        assert needle in err, f"{needle!r} missing from: {err}"
    return err


def test_train_config_that_is_a_folder(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path)]) == 2
    _one_paragraph(capsys, str(tmp_path), "is a folder")


def test_train_config_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_bytes(CONFIG.encode() + b'\n[run]\ndir = "caf\xe9"\n')
    assert main(["train", "--config", str(path)]) == 2
    _one_paragraph(capsys, str(path), "UTF-8")


def test_run_dir_under_a_regular_file_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    from auroragpt.train import trainer

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before run.dir was checked")

    monkeypatch.setattr(trainer, "build_model", no_model)
    monkeypatch.setattr(trainer, "resolve_model_config", no_model)
    (tmp_path / "run.toml").write_text(CONFIG)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for run_dir in (blocker / "run", blocker):
        assert main(["train", "--config", str(tmp_path / "run.toml"), f"--run.dir={run_dir}"]) == 2
        _one_paragraph(capsys, "run.dir", str(blocker), "is a file")


@pytest.mark.parametrize("drop", ["num_attention_heads", "hidden_size"])
def test_import_hf_config_lacking_a_field(tmp_path, capsys, drop):
    import torch

    from auroragpt.export.hf import export_hf
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    model = GPT(get_preset("tiny", n_layers=1, vocab_size=64, max_seq_len=16))
    model.init_weights(torch.Generator().manual_seed(0))
    export_hf(model.eval(), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    del config[drop]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert main(["import", "hf", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    _one_paragraph(capsys, "config.json", drop)
    assert not (tmp_path / "out").exists()


def test_layout_errors_name_keys_that_exist():
    """Every `section.key` a batch/layout error tells the user to set is a real config key."""
    from auroragpt.config import override_keys
    from auroragpt.errors import ConfigError
    from auroragpt.model.presets import ModelConfig
    from auroragpt.parallel.layout import ParallelLayout, validate

    keys = {key for key, _ in override_keys()}
    cfg = ModelConfig(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=256, max_seq_len=64)
    cases = [(ParallelLayout(dp_shard=4), 4, 12, 2), (ParallelLayout(), 1, 0, 1),
             (ParallelLayout(pp=2, dp_shard=1, pp_microbatches=4), 2, 8, 2)]
    for layout, world, gb, mb in cases:
        with pytest.raises(ConfigError) as info:
            validate(layout, world, cfg, gb, mb)
        named = set(re.findall(r"\b([a-z_]+\.[a-z_]+)\b", str(info.value)))
        assert named and named <= keys, f"{sorted(named - keys)} are not config keys: {info.value}"
