"""The AERIS-style denoiser: a non-hierarchical Swin transformer at pixel level (1x1 patches).

Every grid point is a token. Blocks attend inside wh x ww windows, shifted by half a window on
odd blocks (`windows.py`: periodic in longitude, masked across the poles), with 2-D rotary
embeddings, RMSNorm, SwiGLU and adaLN-zero modulation from the diffusion time. The network maps
(noisy tendency, diffusion time, conditioning = previous states + forcings) to the TrigFlow
velocity of the tendency; `diffusion.py` turns that into a loss and into samplers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from auroragpt.errors import ConfigError
from auroragpt.weather import windows as win


@dataclass(frozen=True)
class WeatherModelConfig:
    """Shape of the Swin denoiser and of the grid it runs on."""

    dim: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    window_h: int = 8
    window_w: int = 8
    grid_h: int = 32
    grid_w: int = 64
    n_vars: int = 4           # predicted variables (channels of the state)
    n_cond: int = 12          # conditioning channels: history x n_vars + forcings
    rope_theta: float = 100.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    time_freqs: int = 64      # Fourier features of the diffusion time

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "ffn_dim", "window_h", "window_w", "grid_h", "grid_w", "n_vars", "time_freqs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 4:
            raise ConfigError(f"model.dim ({self.dim}) / model.n_heads ({self.n_heads}) must be a whole head size "
                              "divisible by 4 (2-D rotary embeddings turn half the pairs by row, half by column)")
        for grid, window, axis in ((self.grid_h, self.window_h, "h"), (self.grid_w, self.window_w, "w")):
            if grid % window:
                raise ConfigError(f"the grid's {axis} size ({grid}) is not a multiple of model.window_{axis} ({window})",
                                  hint="pick a window that divides the grid (e.g. 8 for 32x64)")

    # nn.Module-free facts used by the layout checks and the MFU report
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads

    @property
    def window_tokens(self) -> int:
        return self.window_h * self.window_w

    @property
    def grid_points(self) -> int:
        return self.grid_h * self.grid_w

    tie_embeddings = False
    vocab_size = 1

    def block_params(self) -> int:
        """Parameters of one block: qkv + out projection, SwiGLU, adaLN (6 x dim from dim)."""
        d = self.dim
        return 4 * d * d + 3 * d * self.ffn_dim + (d * 6 * d + 6 * d)

    def num_params(self) -> int:
        """Exact parameter count of `SwinDenoiser(self)`."""
        d = self.dim
        embed = (self.n_vars + self.n_cond) * d + d
        time = self.time_freqs * 2 * d + d + d * d + d
        final = d * 2 * d + 2 * d + d * self.n_vars + self.n_vars
        return embed + time + self.n_layers * self.block_params() + final

    def flops_per_point(self) -> float:
        """Training FLOPs per grid point and sample (forward + backward), the convention of
        `ModelConfig.flops_per_token`: 6 x the weights every token multiplies, plus 12 x layers x
        dim x window tokens for the windowed attention. The per-sample adaLN and time MLP are
        added spread over the grid's points."""
        d = self.dim
        per_token = (self.n_vars + self.n_cond) * d + self.n_layers * (4 * d * d + 3 * d * self.ffn_dim) + d * self.n_vars
        per_sample = self.n_layers * 6 * d * d + 2 * d * d + self.time_freqs * 2 * d + d * d
        return 6.0 * (per_token + per_sample / self.grid_points) + 12.0 * self.n_layers * d * self.window_tokens

    def flops_per_step(self, global_batch: int) -> float:
        """Model FLOPs of one training step of `global_batch` samples (the MFU numerator)."""
        return self.flops_per_point() * self.grid_points * global_batch

    def flops_per_token(self, seq_len: int = 0) -> float:
        """The trainer's name for `flops_per_point` (a grid point is a token)."""
        return self.flops_per_point()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "weather model config") -> "WeatherModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown weather model field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)


# One table, CPU demo to AERIS scale. The AERIS sizes follow the paper's names (1.3B, 13B, 40B) at
# 0.25 degrees (720 x 1440); tests check the counts are within 10% of the names.
WEATHER_PRESETS: dict[str, WeatherModelConfig] = {
    "weather-tiny": WeatherModelConfig(dim=64, n_layers=4, n_heads=4, ffn_dim=192),
    "weather-small": WeatherModelConfig(dim=256, n_layers=8, n_heads=8, ffn_dim=768),
    "weather-1.3b": WeatherModelConfig(dim=2048, n_layers=17, n_heads=16, ffn_dim=5504, window_h=30, window_w=30,
                                       grid_h=720, grid_w=1440, n_vars=70, n_cond=150),
    "weather-13b": WeatherModelConfig(dim=5120, n_layers=28, n_heads=40, ffn_dim=13824, window_h=30, window_w=30,
                                      grid_h=720, grid_w=1440, n_vars=70, n_cond=150),
    "weather-40b": WeatherModelConfig(dim=8192, n_layers=33, n_heads=64, ffn_dim=22016, window_h=30, window_w=30,
                                      grid_h=720, grid_w=1440, n_vars=70, n_cond=150),
}


def is_weather_preset(name: str) -> bool:
    return name in WEATHER_PRESETS


def get_weather_preset(name: str, **overrides: object) -> WeatherModelConfig:
    if name not in WEATHER_PRESETS:
        raise ConfigError(f"unknown weather model preset {name!r}", hint=f"choose one of {', '.join(WEATHER_PRESETS)}")
    base = WEATHER_PRESETS[name].to_dict()
    base.update(overrides)
    return WeatherModelConfig.from_dict(base, source=f"preset {name!r} with overrides {sorted(overrides)}")


class RMSNorm(nn.Module):
    """RMSNorm without a gain: adaLN supplies the scale."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (possibly shifted) windows of a [B, H, W, D] field."""

    def __init__(self, cfg: WeatherModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, shifted: bool, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        c = self.cfg
        b, h, w, d = x.shape
        sh, sw = (c.window_h // 2, c.window_w // 2) if shifted else (0, 0)
        qkv = win.shift(self.qkv(x), sh, sw)
        parts = win.window_partition(qkv, c.window_h, c.window_w)  # [B, nH, nW, N, 3D]
        nh, nw, n = parts.shape[1], parts.shape[2], parts.shape[3]
        parts = parts.view(b, nh, nw, n, 3, c.n_heads, c.head_dim).permute(4, 0, 1, 2, 5, 3, 6)
        q, k, v = parts[0], parts[1], parts[2]  # [B, nH, nW, heads, N, hd]
        q, k = win.apply_rope(q, *rope), win.apply_rope(k, *rope)
        out = win.window_attention(q, k, v, mask if shifted else None)
        out = out.permute(0, 1, 2, 4, 3, 5).reshape(b, nh, nw, n, d)
        out = win.unshift(win.window_unpartition(out, c.window_h, c.window_w), sh, sw)
        return self.proj(out)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SwinBlock(nn.Module):
    """Pre-norm block with adaLN-zero: x + gate * f(norm(x) * (1 + scale) + shift)."""

    def __init__(self, cfg: WeatherModelConfig, shifted: bool) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm = RMSNorm(cfg.norm_eps)
        self.attention = WindowAttention(cfg)
        self.mlp = SwiGLU(cfg.dim, cfg.ffn_dim)
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        mod = self.ada(F.silu(c))[:, None, None, :].chunk(6, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        x = x + gate1 * self.attention(self.norm(x) * (1 + scale1) + shift1, self.shifted, rope, mask)
        return x + gate2 * self.mlp(self.norm(x) * (1 + scale2) + shift2)


def time_features(t: torch.Tensor, n: int) -> torch.Tensor:
    """Sin/cos features of the diffusion time t in [0, pi/2]: [B] -> [B, 2n]."""
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), n, device=t.device))
    angles = t.float()[:, None] * freqs[None, :] * 4.0
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SwinDenoiser(nn.Module):
    """F(x_t, t, cond) for TrigFlow: [B, V, H, W] noisy tendency -> [B, V, H, W] velocity."""

    def __init__(self, cfg: WeatherModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_vars + cfg.n_cond, cfg.dim)
        self.time_in = nn.Linear(2 * cfg.time_freqs, cfg.dim)
        self.time_out = nn.Linear(cfg.dim, cfg.dim)
        self.layers = nn.ModuleDict({str(i): SwinBlock(cfg, shifted=i % 2 == 1) for i in range(cfg.n_layers)})
        self.final_norm = RMSNorm(cfg.norm_eps)
        self.final_ada = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.n_vars)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) matrices; adaLN and output projections zero (adaLN-zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, self.cfg.init_std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
        for block in self.layers.values():
            block.ada.weight.zero_()
        self.final_ada.weight.zero_()
        self.out.weight.zero_()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x, context = self.embed_inputs(x_t, t, cond)
        return self.head(self.run_blocks(x, context, list(self.layers)), context)

    # The three parts of `forward`, public so that pipeline stages can run a slice of the blocks.
    def embed_inputs(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Tokens [B, H, W, D] and the blocks' shared context (time embedding, rope, mask)."""
        x = self.embed(torch.cat([x_t, cond], dim=1).permute(0, 2, 3, 1))  # [B, H, W, V + C] -> D
        return x, self.block_context(t, x.shape[1], x.device, x.dtype)

    def block_context(self, t: torch.Tensor, h: int, device: torch.device, dtype: torch.dtype) -> tuple:
        c = self.cfg
        temb = self.time_out(F.silu(self.time_in(time_features(t, c.time_freqs).to(dtype))))
        rope = win.rope_tables(c.window_h, c.window_w, c.head_dim, c.rope_theta, device=device)
        row_mask = win.pole_mask(h, c.window_h, c.window_h // 2, device=device)
        mask = win.expand_row_mask(row_mask, c.window_w) if row_mask is not None else None
        return temb, rope, mask

    def run_blocks(self, x: torch.Tensor, context: tuple, names: list[str]) -> torch.Tensor:
        temb, rope, mask = context
        for name in names:
            x = self.layers[name](x, temb, rope, mask)
        return x

    def head(self, x: torch.Tensor, context: tuple) -> torch.Tensor:
        temb = context[0]
        shift, scale = self.final_ada(F.silu(temb))[:, None, None, :].chunk(2, dim=-1)
        out = self.out(self.final_norm(x) * (1 + scale) + shift)
        return out.permute(0, 3, 1, 2)
