"""Fixtures shared across test folders."""

import os

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (a real one-node Slurm cluster, or a stated skip)

_RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def _no_rendezvous_leaks():
    """Code under test may set MASTER_ADDR and friends in this process (setup() does, as it should
    in a rank); a later test's child jobs would then meet at a host that does not exist."""
    before = {name: os.environ.get(name) for name in _RENDEZVOUS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
