"""The pool's decisions on a fake scheduler: scale up when every replica is busy, down when idle."""

from __future__ import annotations

import asyncio
import itertools

from auroragpt.gateway.config import load_gateway_config
from auroragpt.gateway.jobs import Job
from auroragpt.gateway.pool import Pool, Replica


class FakeScheduler:
    ids = itertools.count(1)

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, spec) -> Job:
        job = Job(id=f"fake-{next(self.ids)}", model=spec.name, site="here", token="t", state="running")
        self.submitted.append(job.id)
        return job

    def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)

    def cleanup(self, token: str) -> None:
        pass


def _pool(tmp_path, min_replicas: int, max_replicas: int) -> tuple[Pool, FakeScheduler]:
    path = tmp_path / "g.toml"
    path.write_text(f'[gateway]\nidle_timeout_s = 5\n[[sites]]\nname = "here"\nscheduler = "local"\n'
                    f'[[models]]\nname = "m"\npath = "{tmp_path}"\nmin_replicas = {min_replicas}\n'
                    f'max_replicas = {max_replicas}\nscale_up_outstanding = 2\n')
    pool = Pool(load_gateway_config(path))
    fake = FakeScheduler()
    pool.schedulers["here"] = fake
    return pool, fake


def _run_replica(pool: Pool, job: Job, outstanding: int) -> Replica:
    pool.registry.jobs[job.id] = job
    pool.replicas[job.id] = Replica(job, "http://x", "k", outstanding)
    return pool.replicas[job.id]


def test_a_replica_is_added_when_all_are_busy_up_to_max(tmp_path):
    pool, fake = _pool(tmp_path, 0, 2)
    replica = _run_replica(pool, Job("a", "m", "here", "t", "running"), outstanding=1)
    asyncio.run(pool._scale("m"))
    assert fake.submitted == []  # not busy enough
    replica.outstanding = 2
    asyncio.run(pool._scale("m"))
    assert len(fake.submitted) == 1
    _run_replica(pool, pool.registry.jobs[fake.submitted[0]], outstanding=5)
    asyncio.run(pool._scale("m"))
    assert len(fake.submitted) == 1  # at max_replicas
    assert pool.pick("m").job.id == "a"  # least outstanding


def test_an_idle_model_is_cancelled_down_to_min_replicas_newest_first(tmp_path):
    pool, fake = _pool(tmp_path, 1, 3)
    for i, name in enumerate(("old", "mid", "new")):
        _run_replica(pool, Job(name, "m", "here", "t", "running", submitted_at=100.0 + i), outstanding=0)
    asyncio.run(pool._scale("m"))
    assert fake.cancelled == []  # used just now
    pool.last_used["m"] -= 10
    asyncio.run(pool._scale("m"))
    assert fake.cancelled == ["new", "mid"] and list(pool.registry.jobs) == ["old"]
    assert pool.model_state("m")["state"] == "running" and pool.model_state("m")["replicas"] == 1


def test_a_cancelled_request_gives_back_its_in_flight_count(tmp_path):
    """A request cancelled while its backend has not answered (gateway shutdown) must not stay counted:
    the count steers least-outstanding routing and keeps an idle model from being scaled down."""
    from auroragpt.gateway.proxy import forward

    pool, _ = _pool(tmp_path, 0, 1)

    async def scenario() -> int:
        async def silent(reader, writer):  # accepts, reads, never answers
            await reader.read(1 << 16)
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replica = _run_replica(pool, Job("a", "m", "here", "t", "running"), outstanding=0)
        replica.base = f"http://127.0.0.1:{port}"
        task = asyncio.create_task(forward(pool, replica, "/v1/completions", {}, b"{}", lambda p, c: None))
        await asyncio.sleep(0.3)
        assert replica.outstanding == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.http.close()
        server.close()
        return replica.outstanding

    assert asyncio.run(scenario()) == 0
