"""The KV-cache generation path gives exactly what recomputing the whole sequence gives."""

from __future__ import annotations

import pytest
import torch
from evalexport_models import make_model

from auroragpt.errors import ConfigError
from auroragpt.model.generate import generate, sample_next
from auroragpt.model.kvcache import SlotKVCache

PROMPTS = [[5, 17, 33, 2, 9], [101], [7, 7, 8, 250, 3, 4, 11, 60, 1]]


def test_greedy_cache_equals_full_recompute_on_a_ragged_batch():
    model = make_model(tie=False)
    cached = generate(model, PROMPTS, 20)
    assert cached == generate(model, PROMPTS, 20, use_cache=False)
    # A row's result does not depend on the other rows of the batch (padding is invisible).
    assert [generate(model, [p], 20)[0] for p in PROMPTS] == cached
    assert all(len(row) == 20 for row in cached)


def test_sampling_with_seed_is_reproducible_and_matches_recompute():
    model = make_model()
    kwargs = dict(temperature=0.9, top_p=0.9, top_k=50, seed=7)
    first = generate(model, PROMPTS, 12, **kwargs)
    assert first == generate(model, PROMPTS, 12, **kwargs)
    assert first == generate(model, PROMPTS, 12, use_cache=False, **kwargs)
    assert first != generate(model, PROMPTS, 12, **{**kwargs, "seed": 8})


def test_stop_token_ends_a_row_and_is_not_returned():
    model = make_model()
    free = generate(model, [PROMPTS[0]], 10)[0]
    stop = free[3]
    stopped = generate(model, [PROMPTS[0]], 10, stop_ids=[stop])[0]
    assert stopped == free[: free.index(stop)]


def test_sample_next_respects_top_k_and_top_p():
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]]).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    picks = set(sample_next(logits, temperature=1.0, top_k=2, generator=gen).tolist())
    assert picks == {1, 2}
    picks = set(sample_next(logits, temperature=1.0, top_p=0.3, generator=gen).tolist())
    assert picks == {1}


def test_slot_cache_rows_at_different_positions_match_full_recompute():
    model = make_model()
    cache = SlotKVCache(model, slots=2, max_len=16)
    with torch.no_grad():
        cache.prefill(model, 0, PROMPTS[0], chunk=2)  # three chunks
        cache.prefill(model, 1, PROMPTS[1])
        logits = cache.decode(model, torch.tensor([40, 41]), torch.tensor([5, 1]))
        assert torch.allclose(logits[0], model(torch.tensor([PROMPTS[0] + [40]]))[0, -1], atol=1e-5)
        assert torch.allclose(logits[1], model(torch.tensor([PROMPTS[1] + [41]]))[0, -1], atol=1e-5)
        cache.move(0, 1, 6)  # slot 1 now continues row 0
        moved = cache.decode(model, torch.tensor([7, 42]), torch.tensor([1, 6]))
        assert torch.allclose(moved[1], model(torch.tensor([PROMPTS[0] + [40, 42]]))[0, -1], atol=1e-5)


def test_too_long_request_is_a_clear_error():
    model = make_model()
    with pytest.raises(ConfigError, match="max_seq_len"):
        generate(model, [[1] * 90], 10)
    with pytest.raises(ConfigError, match="no tokens"):
        generate(model, [[]], 1)
