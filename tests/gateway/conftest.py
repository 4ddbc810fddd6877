"""Fixtures for the gateway tests: a tiny model folder (float64 backends, so greedy answers agree)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a gateway starts servers as jobs and routes requests to them",
    "def add(a, b):\n    return a + b\n",
]


def _build(tmp_path_factory, context: int) -> Path:
    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.model.gpt import GPT
    from auroragpt.model.io import save_model
    from auroragpt.model.presets import get_preset

    root = tmp_path_factory.mktemp("gateway_model")
    texts = [f"{s} {i}" for i in range(40) for s in _SENTENCES]
    tok = train_bpe(texts, 300, root / "tok" / "tokenizer.json", min_frequency=1)
    model = GPT(get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=context))
    model.init_weights(torch.Generator().manual_seed(0))
    folder = root / "tiny-model"
    save_model(model, folder, meta={"note": "gateway tests"}, tokenizer_path=root / "tok" / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, 256)


@pytest.fixture(scope="session")
def long_model_dir(tmp_path_factory) -> Path:
    """A context long enough for a stream that lasts seconds (to break one off mid-way through a scheduler)."""
    return _build(tmp_path_factory, 4096)
