"""Synthetic token batches for benchmarks and tests of the loop itself (no corpus needed).

Sample i is a pure function of (seed, i), so the loader resumes exactly from a sample count and
every data-parallel rank reads its own disjoint samples, like the blend loader does.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class SyntheticLoader:
    """Yields int64 tensors [micro_batch, seq_len + 1] of random tokens in [0, vocab_size)."""

    def __init__(self, vocab_size: int, seq_len: int, dp_rank: int, dp_size: int, micro_batch: int,
                 global_batch: int, seed: int = 0, start_sample: int = 0) -> None:
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_batch, self.global_batch = micro_batch, global_batch
        self.seed = seed
        if start_sample % global_batch:
            raise ValueError(f"start_sample {start_sample} is not a multiple of global_batch {global_batch}")
        self.samples_consumed = start_sample

    def sample(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        # A repeating pattern with noise: learnable, so the loss visibly falls in a demo.
        base = rng.integers(0, self.vocab_size, size=8)
        tokens = np.resize(base, self.seq_len + 1)
        noise = rng.random(self.seq_len + 1) < 0.1
        tokens[noise] = rng.integers(0, self.vocab_size, size=int(noise.sum()))
        return tokens.astype(np.int64)

    def __iter__(self) -> Iterator[torch.Tensor]:
        per_rank = self.global_batch // self.dp_size
        while True:
            # Within one global batch, rank r reads samples [r * per_rank, (r + 1) * per_rank).
            first_of_rank = self.samples_consumed + self.dp_rank * per_rank
            for micro_start in range(0, per_rank, self.micro_batch):
                first = first_of_rank + micro_start
                yield torch.from_numpy(np.stack([self.sample(first + j) for j in range(self.micro_batch)]))
            self.samples_consumed += self.global_batch

    def state_dict(self) -> dict:
        return {"samples_consumed": self.samples_consumed}

    def load_state_dict(self, state: dict) -> None:
        self.samples_consumed = int(state["samples_consumed"])
