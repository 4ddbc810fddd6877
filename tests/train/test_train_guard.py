"""The loss-spike / NaN guard."""

from __future__ import annotations

import math

import pytest

from auroragpt.train.guard import SpikeGuard, TrainingDiverged


def test_nan_and_inf_are_skipped_and_counted():
    guard = SpikeGuard(warmup_steps=0, max_in_a_row=3)
    assert guard.check(1, 5.0, 1.0)
    assert not guard.check(2, math.nan, 1.0)
    assert not guard.check(3, 5.0, math.inf)
    assert guard.check(4, 5.0, 1.0)
    assert guard.skipped_total == 2 and guard.skipped_in_a_row == 0


def test_spike_only_after_warmup():
    guard = SpikeGuard(spike_factor=2.0, warmup_steps=3, max_in_a_row=5)
    assert guard.check(1, 1.0, 1.0)
    assert guard.check(2, 10.0, 1.0)  # still warming up: large early losses are normal
    for step in range(3, 30):
        assert guard.check(step, 1.0, 1.0)
    assert not guard.check(30, 10.0, 1.0)
    assert guard.check(31, 1.5, 1.0)


def test_stops_after_k_in_a_row_with_clear_message():
    guard = SpikeGuard(warmup_steps=0, max_in_a_row=3)
    guard.check(1, 2.0, 1.0)
    guard.check(2, math.nan, 1.0)
    guard.check(3, math.nan, 1.0)
    with pytest.raises(TrainingDiverged) as err:
        guard.check(4, math.nan, 1.0)
    assert "3 steps in a row" in str(err.value) and "optim.lr" in str(err.value)


def test_state_round_trip():
    guard = SpikeGuard()
    for s, loss in enumerate([3.0, 2.5, math.nan]):
        guard.check(s, loss, 1.0)
    other = SpikeGuard()
    other.load_state_dict(guard.state_dict())
    assert other == guard
