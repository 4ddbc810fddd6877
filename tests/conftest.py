"""Fixtures shared across test folders."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from early_commands import EarlyCommands
from slurm_cluster import slurm_cluster  # noqa: F401  (a real one-node Slurm cluster, or a stated skip)

_EARLY = pytest.StashKey[dict]()

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the EARLY_COMMANDS of every selected test that names some (see tests/early_commands.py),
    not under xdist: each worker would start them, and a worker's core is not idle anyway."""
    session.config.stash[_EARLY] = {}
    if os.environ.get("PYTEST_XDIST_WORKER") or session.config.option.collectonly:
        return
    for item in session.items:
        commands = getattr(getattr(item, "module", None), "EARLY_COMMANDS", None)
        if commands is not None and item.get_closest_marker("skip") is None:
            folder = Path(tempfile.mkdtemp(prefix="auroragpt-early-"))
            session.config.stash[_EARLY][item.nodeid] = EarlyCommands(commands, folder).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for job in session.config.stash.get(_EARLY, {}).values():
        job.stop()
        shutil.rmtree(job.folder, ignore_errors=True)


@pytest.fixture
def early_commands(request: pytest.FixtureRequest, tmp_path: Path) -> EarlyCommands:
    """This test module's EARLY_COMMANDS: started at the session's start, or now when they were not."""
    job = request.config.stash.get(_EARLY, {}).get(request.node.nodeid)
    return job if job is not None else EarlyCommands(request.module.EARLY_COMMANDS, tmp_path).start()
