"""The weather-diffusion objective for the shared trainer: model config from the preset and the
dataset, the Swin denoiser with its TrigFlow loss, and a resumable loader of training examples.

The trainer uses these through its model-family table (`auroragpt.train.families`);
a "token" in its throughput and MFU figures is a grid point of one sample.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch

from auroragpt.errors import ConfigError
from auroragpt.weather.dataset import WeatherArrays, load_arrays, split_indices

DEFAULT_PATH = "sim.zarr"
_MODEL_KEYS = ("dim", "n_layers", "n_heads", "ffn_dim", "rope_theta", "norm_eps", "init_std")
_LM_ONLY_KEYS = ("vocab_size", "n_kv_heads", "max_seq_len", "tie_embeddings")


def data_path(cfg) -> str:
    return cfg.data.path or DEFAULT_PATH


@functools.lru_cache(maxsize=2)
def cached_arrays(path: str, variables: str, history: int) -> WeatherArrays:
    return load_arrays(path, variables, history)


def arrays_for(cfg) -> WeatherArrays:
    return cached_arrays(data_path(cfg), cfg.weather.variables, cfg.weather.history)


def resolve_model_config(cfg):
    """The weather preset with [model] / [weather] overrides and the dataset's grid and channels."""
    from auroragpt.weather.model import get_weather_preset

    if cfg.parallel.tp > 1:
        raise ConfigError(f"parallel.tp = {cfg.parallel.tp}: weather models run on data parallelism (DDP / FSDP2), "
                          "window and sequence parallelism (wp, sp) and pipelines (pp), not tensor parallelism",
                          hint="set tp = 1; spread ranks with wp / sp / pp / dp_shard / dp_replicate")
    if cfg.checkpoint.init_from:
        raise ConfigError("checkpoint.init_from copies language-model weights; weather runs continue from a checkpoint",
                          hint="use checkpoint.load_from=RUN_DIR (or a step folder) of a weather run")
    if cfg.weather.history < 1:
        raise ConfigError(f"weather.history must be >= 1 (states the model sees), got {cfg.weather.history}")
    lm_only = [k for k in _LM_ONLY_KEYS if getattr(cfg.model, k) is not None]
    if lm_only:
        raise ConfigError(f"model.{lm_only[0]} has no meaning for the weather preset {cfg.model.preset}",
                          hint=f"remove {', '.join('model.' + k for k in lm_only)}")
    overrides = {k: getattr(cfg.model, k) for k in _MODEL_KEYS if getattr(cfg.model, k) is not None}
    if cfg.weather.window > 0:
        overrides.update(window_h=cfg.weather.window, window_w=cfg.weather.window)
    arrays = arrays_for(cfg)
    h, w = arrays.states.shape[-2:]
    overrides.update(grid_h=int(h), grid_w=int(w), n_vars=len(arrays.variables), n_cond=arrays.n_cond)
    return get_weather_preset(cfg.model.preset, **overrides)


def build_model(model_cfg, device: torch.device, seed: int, on_meta: bool = False) -> torch.nn.Module:
    from auroragpt.weather.diffusion import TrigFlowTraining

    with torch.device("meta" if on_meta else device):
        model = TrigFlowTraining(model_cfg)
    if not on_meta:
        model.init_weights(torch.Generator(device=device).manual_seed(seed))
    return model


class WeatherLoader:
    """Yields [micro_batch, V + C + 1 + V + 1, H, W] training examples: the example, then its
    diffusion noise (`with_noise`). Global sample g is the training time index at position g mod n
    of a permutation seeded by (seed, g div n), and its noise is drawn from a generator seeded by
    (seed, g): both pure functions of g, so a run resumes exactly from a sample count, data-parallel
    ranks read disjoint samples, and every layout (data, window, sequence or pipeline parallel,
    any accumulation) trains on the noise one device would draw."""

    def __init__(self, arrays: WeatherArrays, dp_rank: int, dp_size: int, micro_batch: int, global_batch: int,
                 seed: int, start_sample: int = 0) -> None:
        train = split_indices_with_history(arrays)
        if len(train) == 0:
            raise ConfigError("the training split has no (state, next state) pair", hint="use a dataset with more times")
        self.arrays, self.indices = arrays, train
        self.dp_rank, self.dp_size, self.micro_batch, self.global_batch = dp_rank, dp_size, micro_batch, global_batch
        self.seed, self.samples_consumed = seed, start_sample

    def time_index(self, g: int) -> int:
        n = len(self.indices)
        perm = np.random.default_rng([self.seed, g // n]).permutation(n)
        return int(self.indices[perm[g % n]])

    def __iter__(self) -> Iterator[torch.Tensor]:
        per_rank = self.global_batch // self.dp_size
        while True:
            first_of_rank = self.samples_consumed + self.dp_rank * per_rank
            for micro_start in range(0, per_rank, self.micro_batch):
                first = first_of_rank + micro_start
                yield torch.stack([self.example(first + j) for j in range(self.micro_batch)])
            self.samples_consumed += self.global_batch


    def example(self, g: int) -> torch.Tensor:
        example = self.arrays.training_example(self.time_index(g))
        seed = int(np.random.default_rng([self.seed, g, NOISE_SALT]).integers(2**62))
        return with_noise(example, len(self.arrays.variables), torch.Generator().manual_seed(seed))


NOISE_SALT = 0x6E6F697365  # keeps the noise stream apart from the permutation's (same seed, same g)


def with_noise(example: torch.Tensor, n_vars: int, generator: torch.Generator) -> torch.Tensor:
    """[V + C + 1, H, W] example + its TrigFlow noise z (V channels) and log-scale tau (1 channel,
    constant over the grid, so any tile of the field carries it)."""
    h, w = example.shape[-2:]
    tau = torch.randn(1, generator=generator)
    z = torch.randn(n_vars, h, w, generator=generator)
    return torch.cat([example, z, tau.expand(1, h, w)])


def split_indices_with_history(arrays: WeatherArrays) -> np.ndarray:
    """Training times i with a next state i+1 also in the training split."""
    import xarray as xr

    ds = xr.Dataset(coords={"time": arrays.times})
    train = split_indices(ds, "train")
    return train[(train + 1 < len(arrays.times)) & np.isin(train + 1, train)]


def build_data_loader(cfg, model_cfg, dp_rank: int, dp_size: int, start_sample: int, steps: int) -> WeatherLoader:
    return WeatherLoader(arrays_for(cfg), dp_rank, dp_size, cfg.data.micro_batch, cfg.data.global_batch,
                         seed=cfg.data.seed, start_sample=start_sample)


def next_batch(batches: Iterator[torch.Tensor], accum: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`accum` micro batches; the targets are inside the examples, so the second tensor only
    carries the row count the generic step splits by."""
    rows = torch.cat([next(batches) for _ in range(accum)])
    return rows, torch.zeros(rows.shape[0])


def points_per_step(cfg, model_cfg) -> int:
    return cfg.data.global_batch * model_cfg.grid_points
