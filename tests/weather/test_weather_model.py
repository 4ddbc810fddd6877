"""Presets, the shared FLOPs formula, and the denoiser's structure (adaLN-zero, periodicity)."""

from __future__ import annotations

import pytest
import torch

from auroragpt.errors import ConfigError
from auroragpt.weather.diffusion import TrigFlowTraining, sample
from auroragpt.weather.model import WEATHER_PRESETS, SwinDenoiser, get_weather_preset


@pytest.mark.parametrize("name,nominal", [("weather-1.3b", 1.3e9), ("weather-13b", 13e9), ("weather-40b", 40e9)])
def test_aeris_scale_presets_match_their_names(name, nominal):
    assert abs(WEATHER_PRESETS[name].num_params() / nominal - 1) < 0.1


def test_param_count_is_exact_and_flops_formula_matches_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = get_weather_preset("weather-tiny", grid_h=16, grid_w=32)
    model = TrigFlowTraining(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    batch = torch.randn(2, cfg.n_vars + cfg.n_cond + 1, 16, 32)
    with FlopCounterMode(display=False) as counter:
        model(batch).mean().backward()
    counted = counter.get_total_flops()
    assert abs(cfg.flops_per_step(2) / counted - 1) < 0.1, (cfg.flops_per_step(2), counted)


def test_adaln_zero_starts_at_zero_and_shift_respects_longitude_periodicity():
    cfg = get_weather_preset("weather-tiny", dim=32, n_heads=2, ffn_dim=64, grid_h=16, grid_w=32)
    net = SwinDenoiser(cfg)
    net.init_weights(torch.Generator().manual_seed(0))
    x, cond, t = torch.randn(1, cfg.n_vars, 16, 32), torch.randn(1, cfg.n_cond, 16, 32), torch.tensor([0.7])
    assert torch.count_nonzero(net(x, t, cond)) == 0  # adaLN-zero: the untrained net outputs zero
    for p in net.parameters():  # give every weight a value
        torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
    # rolling the input by a whole window in longitude rolls the output: the globe has no seam
    y = net(x, t, cond)
    rolled = net(torch.roll(x, 8, -1), t, torch.roll(cond, 8, -1))
    torch.testing.assert_close(rolled, torch.roll(y, 8, -1), rtol=1e-4, atol=1e-5)


def test_seeded_sampling_is_reproducible_and_members_independent():
    cfg = get_weather_preset("weather-tiny", dim=32, n_heads=2, ffn_dim=64, grid_h=16, grid_w=32)
    net = SwinDenoiser(cfg)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
    cond = torch.randn(1, cfg.n_cond, 16, 32).expand(3, -1, -1, -1)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    for eta in (0.0, 0.5):
        a = sample(net, cond, 3, gens([1, 2, 3]), eta=eta)
        b = sample(net, cond, 3, gens([1, 2, 3]), eta=eta)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (a[0] - a[1]).abs().max() > 1e-3
        torch.testing.assert_close(sample(net, cond[:1], 3, gens([2]), eta=eta)[0], a[1], rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="window_h"):
        get_weather_preset("weather-tiny", grid_h=30)
    with pytest.raises(ConfigError, match="unknown weather model preset"):
        get_weather_preset("weather-huge")


def test_weather_demo_config_selects_the_weather_objective_and_refuses_tp(tmp_path):
    from pathlib import Path

    from auroragpt.config import load_config
    from auroragpt.train.families import select_family
    from auroragpt.weather.simulate import simulate, write_dataset

    config = Path(__file__).resolve().parents[2] / "configs" / "weather-demo.toml"
    data = write_dataset(simulate(h=16, w=32, days=3, spinup_days=0.5), tmp_path / "sim.zarr")
    cfg = load_config(config, [f"data.path={data}"])
    objective = select_family(cfg)
    assert objective.name == "weather_diffusion"
    model_cfg = objective.resolve_model_config(cfg)
    assert (model_cfg.grid_h, model_cfg.grid_w, model_cfg.n_vars) == (16, 32, 4)
    assert model_cfg.n_cond == 2 * 4 + 2 + 1 + 1  # history, orography + land-sea mask, sin(lat), insolation
    assert select_family(load_config(None, ["data.synthetic=true", "train.steps=1"])).name == "lm"
    with pytest.raises(ConfigError, match="parallel.tp = 2"):
        objective.resolve_model_config(load_config(config, [f"data.path={data}", "parallel.tp=2"]))
    with pytest.raises(ConfigError, match="init_from"):
        objective.resolve_model_config(load_config(config, [f"data.path={data}", "checkpoint.init_from=x"]))
    with pytest.raises(ConfigError, match="vocab_size"):
        objective.resolve_model_config(load_config(config, [f"data.path={data}", "model.vocab_size=10"]))
