"""Fixtures for the post-training tests: a small BPE and chat / preference corpora (no downloads)."""

from __future__ import annotations

import pytest

from post_fixtures import make_tokenizer


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("posttok"))
