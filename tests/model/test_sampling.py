"""The one sampler: safe for every temperature and top_p a request may carry, greedy at the limit."""

from __future__ import annotations

import pytest
import torch

from auroragpt.model.sampling import SamplingError, sample_next

TINY = [1e-38, 1e-45, 1e-300, 5e-324, 1e-8]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("temperature", TINY)
def test_tiny_temperature_is_greedy_and_finite(dtype, temperature):
    logits = (torch.randn(6, 300, generator=torch.Generator().manual_seed(0)) * 30).to(dtype)
    gen = torch.Generator().manual_seed(1)
    for top_p in (1.0, 0.5, 1e-300, 5e-324):
        picks = sample_next(logits, temperature=temperature, top_p=top_p, top_k=0, generator=gen)
        assert picks.tolist() == logits.float().argmax(dim=-1).tolist()


@pytest.mark.parametrize("top_p", [1e-300, 5e-324, 1e-38, 1e-7])
def test_tiny_top_p_keeps_the_best_token(top_p):
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]]).repeat(50, 1)
    for temperature in (2.0, 1.0, 0.01):
        picks = sample_next(logits, temperature=temperature, top_p=top_p, generator=torch.Generator().manual_seed(0))
        assert set(picks.tolist()) == {1}


def test_huge_logits_and_masked_tokens_stay_finite():
    logits = torch.tensor([[3e38, -3e38, float("-inf"), 1e38], [float("-inf"), 0.0, float("-inf"), -1.0]])
    for temperature in (2.0, 1e-38):
        picks = sample_next(logits, temperature=temperature, top_p=0.9, top_k=2, generator=torch.Generator().manual_seed(0))
        assert picks[0].item() in (0, 3) and picks[1].item() in (1, 3)


def test_unsampleable_logits_raise_a_sampling_error():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(SamplingError):
            sample_next(torch.tensor([[0.0, bad]]), temperature=1.0)
    with pytest.raises(SamplingError):
        sample_next(torch.full((1, 3), float("-inf")), temperature=0.5)


def test_temperature_spreads_and_seed_reproduces():
    logits = torch.tensor([[1.0, 1.2, 0.8, -5.0]]).repeat(400, 1)
    a = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and set(a.tolist()) >= {0, 1, 2}
    assert sample_next(logits[0], temperature=0.0).tolist() == [1]  # a [V] row gives one pick


def test_complete_is_generate_on_text():
    from auroragpt.model.generate import complete, generate
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import ModelConfig

    class Chars:
        eod_id = 0

        def encode(self, text: str) -> list[int]:
            return [1 + ord(c) % 60 for c in text]

        def decode(self, ids) -> str:
            return "".join(chr(ord("a") + i % 26) for i in ids)

    model = GPT(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=64, max_seq_len=64))
    model.init_weights(torch.Generator().manual_seed(0))
    tok = Chars()
    prompts = ["hello", "a longer prompt", ""]
    texts = complete(model.eval(), tok, prompts, 6)
    ids = generate(model, [tok.encode(p) if p else [0] for p in prompts], 6, stop_ids=[0])
    assert texts == [tok.decode(row) for row in ids]
    seeded = complete(model, tok, prompts, 6, temperature=0.8, top_p=0.9, seed=4)
    assert seeded == complete(model, tok, prompts, 6, temperature=0.8, top_p=0.9, seed=4)
