"""Fixtures for the data tests: a small byte-level BPE trained on generated text (no downloads)."""

from __future__ import annotations

import random

import pytest

WORDS = ("alpha beta gamma delta epsilon zeta theta lambda sigma omega tensor token corpus "
         "index shard merge train model layer rank node").split()


def make_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + rng.choice([".", "!", "\n", " é ✓"])


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    from auroragpt.data.tokenizer import train_bpe

    rng = random.Random(0)
    texts = [make_text(rng, 40) for _ in range(300)]
    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(texts, 400, out)
    return out
