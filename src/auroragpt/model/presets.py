"""Model shapes: one table of presets, from a CPU demo model to 70B.

The parameter and FLOP formulas live here, next to the shapes, so the MFU reported by training,
the benchmarks and the tests all count the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from auroragpt.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-style decoder. Defaults are Llama-2-like; presets fill in the rest."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int = 32000
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(
                f"model.dim ({self.dim}) must be divisible by model.n_heads ({self.n_heads})",
                hint="pick n_heads so that dim / n_heads is the head size you want (64 or 128 are usual)",
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.n_kv_heads})",
                hint="grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads",
            )
        if self.head_dim % 2:
            raise ConfigError(f"head size dim / n_heads = {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def layer_params(self) -> int:
        """Parameters of one transformer block (attention, SwiGLU MLP, two norms)."""
        kv_dim = self.n_kv_heads * self.head_dim
        attention = self.dim * self.dim * 2 + self.dim * kv_dim * 2
        mlp = 3 * self.dim * self.ffn_dim
        return attention + mlp + 2 * self.dim

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Exact parameter count of `GPT(self)` (a tied output matrix is counted once)."""
        embedding = self.vocab_size * self.dim
        output = 0 if self.tie_embeddings else self.vocab_size * self.dim
        total = embedding + self.n_layers * self.layer_params() + self.dim + output
        return total - embedding if exclude_embeddings else total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), as in PaLM's appendix B.

        6 x the parameters that take part in matrix products (every weight but the embedding
        look-up; a tied output matrix does take part) plus 12 x layers x dim x seq_len for the
        attention scores and their weighted sum. Causal masking is not discounted, as is the
        convention that makes MFU figures comparable across tools.
        """
        matmul_params = self.num_params() - self.vocab_size * self.dim
        if self.tie_embeddings:
            matmul_params += self.vocab_size * self.dim
        return 6.0 * matmul_params + 12.0 * self.n_layers * self.dim * seq_len

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "model config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None


# The one table of presets. Sizes in the names are nominal; tests check the exact counts.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384,
                        vocab_size=4096, max_seq_len=512, tie_embeddings=True),
    "125m": ModelConfig(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2560,
                        max_seq_len=2048, tie_embeddings=True),
    "350m": ModelConfig(dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, ffn_dim=2816,
                        max_seq_len=2048, tie_embeddings=True),
    "1b": ModelConfig(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn_dim=5632, max_seq_len=2048),
    "2b": ModelConfig(dim=2560, n_layers=28, n_heads=20, n_kv_heads=4, ffn_dim=6912),
    "7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008),
    "70b": ModelConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672, rope_theta=500000.0),
}


def get_preset(name: str, **overrides: object) -> ModelConfig:
    """A preset with some fields replaced (vocab_size from the tokenizer, max_seq_len, ...)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}", hint=f"choose one of {', '.join(PRESETS)}")
    base = PRESETS[name].to_dict()
    base.update(overrides)
    return ModelConfig.from_dict(base, source=f"preset {name!r} with overrides {sorted(overrides)}")
