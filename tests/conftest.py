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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup`: the tests of one file stay on one worker (its module and
    session fixtures, e.g. trained runs, are built once), and every test of the real Slurm cluster
    runs on one worker (the session fixture starts the daemons; two workers would race to)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        slurm = "slurm_cluster" in getattr(item, "fixturenames", ()) or "slurm" in item.path.name
        item.add_marker(pytest.mark.xdist_group("slurm" if slurm else item.path.relative_to(config.rootpath).as_posix()))
