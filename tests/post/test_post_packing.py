"""Packing: a deterministic best-fit-decreasing plan, and packed rows computing exactly what their
examples compute alone (attention blocked at example boundaries, positions restarted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auroragpt.data.examples import IGNORE, ExamplePlan, decode_packed_rows, decode_rows
from auroragpt.data.packing import best_fit_decreasing, packed_row
from post_fixtures import chat_records, write_jsonl


def test_best_fit_decreasing_is_a_valid_deterministic_plan():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    rows = best_fit_decreasing(lengths, 64)
    assert rows == best_fit_decreasing(lengths.copy(), 64)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(int(lengths[i]) for i in row) <= 64 for row in rows)
    assert len(rows) <= int(np.ceil(lengths.sum() / 64 * 11 / 9)) + 1  # BFD's 11/9 OPT + 6/9 bound
    assert best_fit_decreasing([5, 3, 4, 2, 6], 10) == [[4, 2], [0, 1, 3]]


def _model(vocab: int, seq: int):
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    model = GPT(get_preset("tiny", n_layers=2, vocab_size=vocab, max_seq_len=seq))
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def test_packed_forward_and_loss_equal_unpacked_examples(tmp_path, tokenizer_path):
    from auroragpt.data.tokenize import tokenize_corpora
    from auroragpt.data.tokenizer import load_tokenizer

    write_jsonl(tmp_path / "chat.jsonl", chat_records(12, seed=3))
    tokenize_corpora([tmp_path / "chat.jsonl"], tmp_path / "chat", tokenizer_path, fmt="chat", workers=1)
    seq = 48
    packed = ExamplePlan([tmp_path / "chat"], seq, 1000, seed=0, pairs=False, pack=True)
    plain = ExamplePlan([tmp_path / "chat"], seq, 1000, seed=0, pairs=False)
    assert packed.num_units < plain.num_units  # rows do hold several examples
    model = _model(load_tokenizer(tokenizer_path).vocab_size, seq)
    total, count = torch.zeros(()), 0
    with torch.no_grad():
        for members in packed.rows:
            row = torch.from_numpy(packed_row([packed.example_sequences(e)[0] for e in members], seq + 1))[None]
            inputs, targets = decode_packed_rows(row)
            logits = model(inputs[:, 0], documents=inputs[:, 1])
            at = 0
            for e in members:
                tokens, _ = packed.example_sequences(e)[0]
                alone_in, alone_t = decode_rows(torch.from_numpy(plain.encoded_row(*plain.example_sequences(e)[0],
                                                                                   tokens.size))[None])
                alone = model(alone_in)
                n = tokens.size - 1
                torch.testing.assert_close(logits[:, at:at + n], alone, rtol=1e-5, atol=1e-5)
                assert torch.equal(targets[:, at:at + n], alone_t)
                at += tokens.size
            assert (targets[:, at - 1:] == IGNORE).all()  # nothing crosses into the padding
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
            count += int((targets != IGNORE).sum())
        plain_total, plain_count = torch.zeros(()), 0
        for e in range(plain.num_examples):
            inputs, targets = decode_rows(torch.from_numpy(plain.encoded_row(*plain.example_sequences(e)[0], seq + 1))[None])
            plain_total += F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
            plain_count += int((targets != IGNORE).sum())
    assert count == plain_count
    assert float(total / count) == pytest.approx(float(plain_total / plain_count), abs=1e-5)
