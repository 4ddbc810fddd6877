"""Model families the one trainer runs: what differs between a language model and a weather model.

A family supplies the model config, the model, the loader, the throughput unit of a step and the
objective the loop calls (`auroragpt.train.objectives`). Language models are the default, with
`[train] objective` choosing pretrain, sft or dpo; a `weather-*` model preset selects weather
diffusion. The loop in `trainer` stays the same for all of them: a new family is one more entry
here, never a branch inside the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelFamily:
    name: str
    resolve_model_config: Callable[[Any], Any]
    build_model: Callable[..., Any]
    build_data_loader: Callable[..., Any]
    tokens_per_step: Callable[[Any, Any], int]  # throughput units (tokens, or grid points x samples)
    build_objective: Callable[..., Any]  # (cfg, runner, model_cfg, info, loader) -> objective
    parallelize: Callable[..., Any] | None = None  # (model, layout, mesh, **options) -> runner; None: parallel.parallelize


def select_family(cfg: Any) -> ModelFamily:
    """The family the config asks for, by its model preset."""
    from auroragpt.weather.model import is_weather_preset

    if is_weather_preset(cfg.model.preset):
        return _weather()
    from auroragpt.train import trainer
    from auroragpt.train.objectives import build_objective

    return ModelFamily("lm", trainer.resolve_model_config, trainer.build_model, trainer.build_data_loader,
                       lambda c, _m: c.data.global_batch * c.data.seq_len, build_objective)


def _weather() -> ModelFamily:
    from auroragpt.train.objectives import FixedLossObjective
    from auroragpt.weather import objective as weather
    from auroragpt.weather.diffusion import mean_loss

    def build(*_args: Any) -> FixedLossObjective:
        return FixedLossObjective("weather_diffusion", weather.next_batch, mean_loss)

    from auroragpt.parallel.window_train import parallelize_weather

    return ModelFamily("weather_diffusion", weather.resolve_model_config, weather.build_model,
                       weather.build_data_loader, weather.points_per_step, build, parallelize_weather)
