"""Fixtures for the eval/export tests."""

from __future__ import annotations

import pytest
from evalexport_models import TEXTS


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    """A small byte-level BPE trained on a few sentences (vocabulary 320, <|endoftext|> = end of document)."""
    from auroragpt.data.tokenizer import train_bpe

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(TEXTS, 320, path)
    return path
