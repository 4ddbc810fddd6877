"""What differs between training objectives, as one small table the loop dispatches on.

The loop in `trainer.train` is the same for every objective; an objective supplies the model
config, the model, the loader, how a global batch is assembled, the loss and how many "tokens"
(throughput units) a step processes. Language modelling is the default; a model preset of
another family (weather-*) selects its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    name: str
    resolve_model_config: Callable[[Any], Any]
    build_model: Callable[..., Any]
    build_data_loader: Callable[..., Any]
    next_batch: Callable[..., Any]
    loss_fn: Callable[..., Any]
    tokens_per_step: Callable[[Any, Any], int]


def select_objective(cfg) -> Objective:
    """The objective the config asks for (by its model preset's family)."""
    from auroragpt.weather.model import is_weather_preset

    if is_weather_preset(cfg.model.preset):
        from auroragpt.weather.objective import objective

        return objective()
    from auroragpt.train import trainer

    return Objective("lm", trainer.resolve_model_config, trainer.build_model, trainer.build_data_loader,
                     trainer.next_batch, trainer.cross_entropy,
                     lambda c, _m: c.data.global_batch * c.data.seq_len)
