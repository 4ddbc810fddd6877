"""Several sites behind one gateway: which site a job goes to, and falling back when a site fails.

The policy's decisions are checked here on fake schedulers (fast); the fall-back from a broken site
and the spread over two sites when one is at max_jobs, end to end with real local sites, are part of
test_gateway_local.py::test_two_replicas_serve_16_clients_like_a_direct_server (it starts two
replicas anyway).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path


from auroragpt.errors import LaunchError
from auroragpt.gateway.config import load_gateway_config
from auroragpt.gateway.jobs import Job
from auroragpt.gateway.pool import Pool

_ids = itertools.count(1)


class FakeSite:
    """A scheduler that submits (or refuses to), and reports every job as `status`."""

    def __init__(self, name: str, refuse: bool = False, status: str = "queued") -> None:
        self.name, self.refuse, self.state = name, refuse, status
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, spec) -> Job:
        if self.refuse:
            raise LaunchError(f"sbatch at {self.name} exited with 1: invalid partition")
        job = Job(id=f"{self.name}-{next(_ids)}", model=spec.name, site=self.name, token="t", state="queued")
        self.submitted.append(job.id)
        return job

    def status(self, job: Job) -> str:
        return self.state

    def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)

    def cleanup(self, token: str) -> None:
        pass

    def files(self, token: str) -> tuple[Path, Path, Path]:
        return Path("/nonexistent/key"), Path("/nonexistent/endpoint.json"), Path("/nonexistent/log")


def _pool(tmp_path, sites: dict[str, str], start_timeout_s: float = 600) -> tuple[Pool, dict[str, FakeSite]]:
    """A pool over sites {name: extra TOML lines}; model m lists them in that order."""
    text = f"[gateway]\nstart_timeout_s = {start_timeout_s}\nstate_dir = \"state\"\n"
    for name, extra in sites.items():
        text += f'[[sites]]\nname = "{name}"\nscheduler = "local"\n{extra}\n'
    text += f'[[models]]\nname = "m"\npath = "{tmp_path}"\nsites = {list(sites)!r}\nmax_replicas = 4\n'.replace("'", '"')
    (tmp_path / "g.toml").write_text(text)
    pool = Pool(load_gateway_config(tmp_path / "g.toml"))
    fakes = {name: FakeSite(name) for name in sites}
    pool.schedulers.update(fakes)
    return pool, fakes


def _job(site: str, state: str, model: str = "m") -> Job:
    return Job(id=f"{site}-{next(_ids)}", model=model, site=site, token="t", state=state)


def test_sites_rank_hot_first_then_shortest_wait_then_config_order(tmp_path):
    pool, _ = _pool(tmp_path, {"a": "max_jobs = 1", "b": "", "c": ""})
    order = lambda *jobs: pool.sites.order("m", jobs)  # noqa: E731
    assert order() == ["a", "b", "c"]
    assert order(_job("a", "queued")) == ["b", "c"]  # a is at max_jobs
    assert order(_job("b", "queued")) == ["a", "c", "b"]  # b has a job waiting
    assert order(_job("b", "queued", model="other"), _job("c", "starting")) == ["a", "b", "c"]  # ties: config order
    assert order(_job("c", "running"), _job("c", "running")) == ["c", "a", "b"]  # m is hot at c
    assert order(_job("c", "running", model="other")) == ["a", "b", "c"]  # another model running is not hot


def test_a_refused_submission_falls_back_to_the_next_site_and_says_so(tmp_path):
    pool, fakes = _pool(tmp_path, {"a": "", "b": "max_jobs = 1"})
    fakes["a"].refuse = True
    job = asyncio.run(pool._submit("m"))
    assert job is not None and job.site == "b" and "submission failed at a" in job.note
    state = pool.model_state("m")
    assert state["sites"] == ["b"] and "invalid partition" in state["site_errors"]["a"]
    assert pool.sites.order("m", pool.registry.jobs.values()) == ["a"]  # b is full; a failed but is the last resort
    assert asyncio.run(pool._submit("m")) is None  # a, tried again as the last resort, refuses again
    fakes["a"].refuse = False
    pool.registry.jobs.clear()
    assert pool.sites.order("m", []) == ["b", "a"]  # a failed recently: tried after the others
    assert asyncio.run(pool._submit("m")).site == "b"


def test_a_job_not_running_within_start_timeout_moves_to_the_next_site(tmp_path):
    pool, fakes = _pool(tmp_path, {"a": "", "b": ""}, start_timeout_s=30)
    first = asyncio.run(pool._submit("m"))
    assert first.site == "a"
    asyncio.run(pool._poll_job(first))
    assert first.id in pool.registry.jobs  # within start_timeout_s: left alone
    first.submitted_at -= 31
    asyncio.run(pool._poll_job(first))
    assert fakes["a"].cancelled == [first.id] and first.id not in pool.registry.jobs
    (second,) = pool.registry.jobs.values()
    assert second.site == "b" and f"replaces {first.id}" in second.note
    assert "not running after" in pool.model_state("m")["site_errors"]["a"]


def test_one_site_keeps_its_queued_job_past_start_timeout(tmp_path):
    pool, fakes = _pool(tmp_path, {"a": ""}, start_timeout_s=30)
    job = asyncio.run(pool._submit("m"))
    job.submitted_at -= 31
    asyncio.run(pool._poll_job(job))
    assert fakes["a"].cancelled == [] and list(pool.registry.jobs) == [job.id]  # a new job would queue last


def test_a_job_ending_before_its_server_answers_marks_its_site_failed(tmp_path):
    pool, fakes = _pool(tmp_path, {"a": "", "b": ""})
    job = asyncio.run(pool._submit("m"))
    fakes["a"].state = "gone"
    asyncio.run(pool._poll_job(job))
    assert pool.registry.jobs == {} and "ended before its server answered" in pool.model_state("m")["site_errors"]["a"]
    assert asyncio.run(pool._submit("m")).site == "b"


def test_a_reattached_job_that_once_ran_is_not_late(tmp_path):
    """After a gateway restart a running job is "starting" again until /health answers: it must not be
    taken for a job that never started within start_timeout_s (cancelled, moved) or a failed site."""
    pool, fakes = _pool(tmp_path, {"a": "", "b": ""}, start_timeout_s=30)
    job = asyncio.run(pool._submit("m"))
    job.state, job.submitted_at, job.running_since = "starting", job.submitted_at - 3600, job.submitted_at - 3590
    fakes["a"].state = "started"
    asyncio.run(pool._poll_job(job))
    assert fakes["a"].cancelled == [] and list(pool.registry.jobs) == [job.id] and pool.sites.errors("m") == {}
    fakes["a"].state = "gone"  # and when it dies, the site is not blamed for failing to start it
    asyncio.run(pool._poll_job(job))
    assert pool.registry.jobs == {} and pool.sites.errors("m") == {}
