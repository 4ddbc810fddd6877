"""Fixtures for tests/runtime."""

from __future__ import annotations

import pytest
from runtime_cli_helpers import FOREIGN


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No launcher, scheduler or AURORAGPT_* override variables in os.environ."""
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
