"""This rank's share of every global batch, as [micro_batch, S+1] int64 tensors, resumable exactly.

Global batch b holds plan samples [b*G, (b+1)*G). Data-parallel rank r owns the contiguous slice
[b*G + r*G/D, b*G + (r+1)*G/D) and reads it as G/(D*micro_batch) micro-batches, so the ranks'
shares are disjoint and together cover each global batch. The position is one number, the
global samples consumed (identical on every rank at the same step), which makes resuming exact
and lets the data-parallel size change between runs at a global-batch boundary.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from auroragpt.data.blend import BlendPlan
from auroragpt.config_rules import grad_accum_steps
from auroragpt.errors import ConfigError


class MicroBatchDataset(Dataset):
    """Item n is this rank's n-th micro-batch over the whole run (map-style, so workers split it)."""

    def __init__(self, plan: BlendPlan, dp_rank: int, dp_size: int, micro_batch: int, global_batch: int) -> None:
        self.plan = plan
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_batch, self.global_batch = micro_batch, global_batch
        self.micro_per_batch = grad_accum_steps(global_batch, micro_batch, dp_size)
        self.num_global_batches = len(plan) // global_batch

    def __len__(self) -> int:
        return self.num_global_batches * self.micro_per_batch

    def sample_indices(self, n: int) -> np.ndarray:
        """Plan sample indices of this rank's micro-batch n."""
        batch, micro = divmod(n, self.micro_per_batch)
        first = batch * self.global_batch + (self.dp_rank * self.micro_per_batch + micro) * self.micro_batch
        return np.arange(first, first + self.micro_batch, dtype=np.int64)

    def __getitem__(self, n: int) -> torch.Tensor:
        return torch.from_numpy(self.plan.samples_batch(self.sample_indices(n)))


class BlendLoader:
    """Iterates this rank's micro-batches from the current position; `state_dict()` saves it."""

    def __init__(
        self,
        dataset: MicroBatchDataset,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        start_sample: int = 0,
        prefetch_factor: int = 2,
    ) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch_factor = prefetch_factor
        self._micro_done = 0
        self.load_state_dict({"consumed_samples": start_sample})

    @property
    def consumed_samples(self) -> int:
        """Global samples consumed by all ranks together, counted at micro-batch granularity."""
        ds = self.dataset
        return self._micro_done * ds.micro_batch * ds.dp_size

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict) -> None:
        consumed = int(state["consumed_samples"])
        step = self.dataset.micro_batch * self.dataset.dp_size
        if consumed < 0 or consumed % step:
            raise ConfigError(
                f"cannot resume the loader at {consumed} consumed samples: not a multiple of "
                f"micro_batch x data-parallel size = {step}",
                hint="resume at a global-batch boundary, or with the micro batch and data-parallel size of the saved run",
            )
        self._micro_done = consumed // step

    def __len__(self) -> int:
        """Micro-batches left for this rank."""
        return max(len(self.dataset) - self._micro_done, 0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        start = self._micro_done
        if start >= len(self.dataset):
            return
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=range(start, len(self.dataset)),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False,
        )
        for batch in loader:
            self._micro_done += 1
            yield batch


def build_loader(
    plan: BlendPlan,
    dp_rank: int,
    dp_size: int,
    micro_batch: int,
    global_batch: int,
    num_workers: int = 0,
    start_sample: int = 0,
    pin_memory: bool | None = None,
) -> BlendLoader:
    """A resumable loader of this rank's [micro_batch, S+1] int64 shares of each global batch."""
    if dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise ConfigError(f"data-parallel rank {dp_rank} is outside [0, {dp_size})")
    grad_accum_steps(global_batch, micro_batch, dp_size)
    if len(plan) < global_batch:
        raise ConfigError(
            f"the blend plan has {len(plan)} samples, fewer than one global batch of {global_batch}",
            hint="ask for more tokens or a smaller global batch",
        )
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    dataset = MicroBatchDataset(plan, dp_rank, dp_size, micro_batch, global_batch)
    return BlendLoader(dataset, num_workers=num_workers, pin_memory=pin_memory, start_sample=start_sample)
