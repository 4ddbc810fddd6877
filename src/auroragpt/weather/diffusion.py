"""TrigFlow diffusion of the normalised tendency (Lu & Song 2024, the objective of AERIS's code).

With sigma_d the data scale (1: tendencies are normalised), noise z ~ N(0, sigma_d^2) and a time
t in [0, pi/2], the noisy sample is x_t = cos(t) x0 + sin(t) z. The network F predicts the
velocity v = cos(t) z - sin(t) x0 (scaled by 1/sigma_d); then x0 = cos(t) x_t - sin(t) sigma_d F
and z = sin(t) x_t + cos(t) sigma_d F. Sampling walks t from near pi/2 down to 0 by DDIM steps
(deterministic: the probability-flow ODE's exact step for a locally constant F) or with a
fraction `eta` of the noise estimate replaced by fresh noise at every step (stochastic).
"""

from __future__ import annotations

import math

import torch

from auroragpt.weather.model import SwinDenoiser, WeatherModelConfig


class TrigFlowTraining(SwinDenoiser):
    """The denoiser whose forward is the training loss, so the trainer's generic step drives it.

    forward(batch): batch [B, V + C + 1, H, W] = normalised tendency x0 (V channels), conditioning
    (C channels) and the latitude weight (1 channel), optionally followed by the sample's noise z
    (V channels) and log-scale tau (1 channel, constant over the grid), as the trainer's loader
    draws them per sample (`weather.objective.with_noise`). Without them, t and z come from torch's
    global RNG. Returns the latitude-weighted squared velocity error per element; its mean is the
    loss. Parameter names are the denoiser's, so a checkpoint loads into a plain `SwinDenoiser`.
    """

    def __init__(self, cfg: WeatherModelConfig, p_mean: float = -1.0, p_std: float = 1.4, sigma_data: float = 1.0) -> None:
        super().__init__(cfg)
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data
        # draws the noise for a (possibly partial) field: a field-parallel wrapper draws the whole
        # field and keeps its part, so every layout sees the noise one device would
        self.noise_like = torch.randn_like

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x_in, t, cond, target, lat_w = self.prepare(batch)
        return self.errors(super().forward(x_in, t, cond), target, lat_w)

    # The two halves of `forward`, public so that pipeline stages can run the blocks in between.
    def prepare(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(network input x_t / sigma_d, t, cond, velocity target, latitude weight) of a batch."""
        v, c = self.cfg.n_vars, self.cfg.n_cond
        x0, cond, lat_w = batch[:, :v], batch[:, v:v + c], batch[:, v + c:v + c + 1]
        if batch.shape[1] == 2 * v + c + 2:  # the sample's own noise
            z, tau = batch[:, v + c + 1:2 * v + c + 1], batch[:, -1, 0, 0]
        elif batch.shape[1] == v + c + 1:
            z, tau = self.noise_like(x0), torch.randn(x0.shape[0], device=x0.device)
        else:
            raise ValueError(f"a training batch has {v + c + 1} channels (x0, conditioning, latitude weight), "
                             f"or {2 * v + c + 2} with the noise; got {batch.shape[1]}")
        t = torch.atan(torch.exp(self.p_mean + self.p_std * tau) / self.sigma_data)
        z = z * self.sigma_data
        ct, st = torch.cos(t)[:, None, None, None], torch.sin(t)[:, None, None, None]
        x_t = ct * x0 + st * z
        target = (ct * z - st * x0) / self.sigma_data
        return x_t / self.sigma_data, t, cond, target, lat_w

    @staticmethod
    def errors(pred: torch.Tensor, target: torch.Tensor, lat_w: torch.Tensor) -> torch.Tensor:
        """Latitude-weighted squared velocity error per element."""
        return lat_w * (pred.float() - target.float()).pow(2)


def mean_loss(per_element: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    """The trainer's loss_fn for TrigFlowTraining: the mean of the weighted errors."""
    return per_element.mean()


def sampling_times(steps: int, sigma_max: float = 80.0, sigma_min: float = 0.002, sigma_data: float = 1.0,
                   rho: float = 7.0) -> list[float]:
    """steps + 1 diffusion times from arctan(sigma_max) down to exactly 0, spaced as EDM's sigmas."""
    if steps < 1:
        raise ValueError("at least one sampling step is needed")
    if steps == 1:
        sigmas = [sigma_max]
    else:
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)]
    return [math.atan(s / sigma_data) for s in sigmas] + [0.0]


@torch.no_grad()
def sample(net: SwinDenoiser, cond: torch.Tensor, steps: int, generators: list[torch.Generator], eta: float = 0.0,
           sigma_data: float = 1.0) -> torch.Tensor:
    """One draw of the normalised tendency per row of `cond` [B, C, H, W]; eta = 0 is the ODE sampler.

    Row b draws all its noise from generators[b], so a member is reproduced by its seed alone,
    whatever else is in the batch.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    b, _, h, w = cond.shape
    if len(generators) != b:
        raise ValueError(f"{len(generators)} generators for {b} rows")
    one = (net.cfg.n_vars, h, w)
    noise = lambda: torch.stack([torch.randn(one, generator=g, dtype=cond.dtype) for g in generators]).to(cond.device)  # noqa: E731
    times = sampling_times(steps, sigma_data=sigma_data)
    x = noise() * sigma_data * math.sin(times[0])  # x_T = sin(T) z: the cos(T) x0 part is negligible at sigma_max
    for t, s in zip(times[:-1], times[1:]):
        tt = torch.full((b,), t, device=cond.device, dtype=cond.dtype)
        f = net(x / sigma_data, tt, cond) * sigma_data
        x0 = math.cos(t) * x - math.sin(t) * f
        z = math.sin(t) * x + math.cos(t) * f
        if eta > 0 and s > 0:
            z = math.sqrt(1 - eta**2) * z + eta * noise() * sigma_data
        x = math.cos(s) * x0 + math.sin(s) * z
    return x
