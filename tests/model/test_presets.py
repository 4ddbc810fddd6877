import pytest
import torch

from auroragpt.errors import ConfigError
from auroragpt.model.gpt import GPT
from auroragpt.model.presets import PRESETS, ModelConfig, get_preset

# Nominal sizes the preset names promise, in parameters.
NOMINAL = {"125m": 125e6, "350m": 350e6, "1b": 1.1e9, "2b": 2.0e9, "7b": 6.74e9, "70b": 69e9}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_formula_matches_the_built_model(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = GPT(cfg)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_preset_sizes_match_their_names(name):
    assert PRESETS[name].num_params() == pytest.approx(NOMINAL[name], rel=0.12)


def test_exact_counts_are_pinned():
    # Pinned so a change to a preset shape is a deliberate, visible decision.
    assert PRESETS["7b"].num_params() == 6_738_415_616
    assert PRESETS["tiny"].num_params() == 1_311_872


def test_flops_per_token_counts_output_and_attention():
    cfg = PRESETS["7b"]
    n_matmul = cfg.num_params() - cfg.vocab_size * cfg.dim
    assert cfg.flops_per_token(4096) == 6 * n_matmul + 12 * 32 * 4096 * 4096


def test_overrides_and_errors():
    assert get_preset("tiny", vocab_size=300).vocab_size == 300
    with pytest.raises(ConfigError, match="unknown model preset"):
        get_preset("13b")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(dim=100, n_layers=1, n_heads=3, n_kv_heads=1, ffn_dim=8)
    with pytest.raises(ConfigError, match="multiple"):
        ModelConfig(dim=128, n_layers=1, n_heads=4, n_kv_heads=3, ffn_dim=8)
    with pytest.raises(ConfigError, match="unknown model field"):
        get_preset("tiny", hidden=3)
