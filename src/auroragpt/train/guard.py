"""Loss-spike / NaN guard: skip a bad optimizer step, count it, and stop after too many in a row.

Every rank sees the same (all-reduced) loss and the same global grad norm, so every rank takes
the same decision without extra communication.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from auroragpt.errors import AuroraError


class TrainingDiverged(AuroraError):
    """Too many consecutive steps were skipped: the run is not going to recover on its own."""


@dataclass
class SpikeGuard:
    """Keeps an exponential moving average of the loss; a step is bad when its loss or grad norm is
    not finite, or (after `warmup_steps` good steps) the loss exceeds `spike_factor` x the average."""

    spike_factor: float = 3.0
    warmup_steps: int = 20
    max_in_a_row: int = 5
    ema_decay: float = 0.95
    ema: float | None = None
    good_steps: int = 0
    skipped_total: int = 0
    skipped_in_a_row: int = 0

    def check(self, step: int, loss: float, grad_norm: float) -> bool:
        """True when the step may be applied. Raises TrainingDiverged after max_in_a_row skips."""
        reason = self._reason(loss, grad_norm)
        if reason is None:
            self.ema = loss if self.ema is None else self.ema_decay * self.ema + (1 - self.ema_decay) * loss
            self.good_steps += 1
            self.skipped_in_a_row = 0
            return True
        self.skipped_total += 1
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= self.max_in_a_row:
            raise TrainingDiverged(
                f"step {step}: {self.skipped_in_a_row} steps in a row were skipped (last: {reason})",
                hint="lower optim.lr, raise optim.warmup_steps or lower train.grad_clip, then resume from "
                "the last checkpoint; train.spike_factor and train.max_skipped_in_a_row tune the guard",
            )
        return False

    def _reason(self, loss: float, grad_norm: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss}"
        if not math.isfinite(grad_norm):
            return f"grad norm is {grad_norm}"
        if self.ema is not None and self.good_steps >= self.warmup_steps and loss > self.spike_factor * self.ema:
            return f"loss {loss:.4f} > {self.spike_factor} x running average {self.ema:.4f}"
        return None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
