"""Fixtures shared across test folders."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from early_commands import EarlyCommands, run_in_background
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
    """Queue the EARLY_COMMANDS of every module with a selected test (see tests/early_commands.py) on
    one background thread; not under xdist, where every worker would run them and no core is idle."""
    jobs = session.config.stash[_EARLY] = {}
    if os.environ.get("PYTEST_XDIST_WORKER") or session.config.option.collectonly:
        return
    for item in session.items:
        module = getattr(item, "module", None)
        commands = getattr(module, "EARLY_COMMANDS", None)
        if commands is not None and module.__name__ not in jobs:
            folder = Path(tempfile.mkdtemp(prefix="auroragpt-early-"))
            jobs[module.__name__] = EarlyCommands(commands, folder, getattr(module, "EARLY_FILES", None))
    if jobs:
        run_in_background(list(jobs.values()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for job in session.config.stash.get(_EARLY, {}).values():
        job.stop()
        shutil.rmtree(job.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def early_commands(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EarlyCommands:
    """This module's EARLY_COMMANDS, queued at the session's start (the test waits for them), or run by
    the test when they were not queued."""
    job = request.config.stash.get(_EARLY, {}).get(request.module.__name__)
    if job is None:
        job = EarlyCommands(request.module.EARLY_COMMANDS, tmp_path_factory.mktemp("early"),
                            getattr(request.module, "EARLY_FILES", None))
    return job
