"""Which backend jobs each model has, and when to start, register, route to and retire them.

One asyncio task polls: every job's scheduler state, the /health of started jobs (registering
them as running replicas), idle models (cancelled down to min_replicas) and busy ones (a replica
added up to max_replicas). Requests take the running replica with the fewest in flight, whatever
its site; which site a new job goes to, and the fall-back to the next site when one fails, is
`federation.SiteChooser`'s policy.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp

from auroragpt.errors import LaunchError
from auroragpt.gateway.config import GatewayConfig
from auroragpt.gateway.federation import SiteChooser
from auroragpt.gateway.jobs import Job, Scheduler, scheduler_for
from auroragpt.gateway.registry import Registry
from auroragpt.log import get_logger

log = get_logger(__name__)


@dataclass
class Replica:
    job: Job
    base: str
    key: str
    outstanding: int = 0

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


class Pool:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.registry = Registry.load(cfg.state_dir / "state.json")
        self.schedulers: dict[str, Scheduler] = {n: scheduler_for(s, cfg.state_dir) for n, s in cfg.sites.items()}
        self.replicas: dict[str, Replica] = {}  # job id -> running replica
        self.sites = SiteChooser(cfg)
        self.last_used: dict[str, float] = {name: time.monotonic() for name in cfg.models}
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def http(self) -> aiohttp.ClientSession:
        """One keep-alive connection pool to every backend (aiohttp: its C parser keeps the hop short).
        Idle connections are dropped after 4 s, before a backend's uvicorn (5 s) closes them under a request."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0), auto_decompress=False)
        return self._http

    async def start(self) -> None:
        """Reattach to the jobs of the state file (those still alive), then keep polling."""
        for job in list(self.registry.jobs.values()):
            if job.site not in self.schedulers or job.model not in self.cfg.models:
                log.warning("state file names job %s of an unknown site/model: cancelling nothing, forgetting it", job.id)
                del self.registry.jobs[job.id]
            elif job.state == "running":
                job.state = "starting"  # registered again once /health answers
        await self.poll_once()
        self._task = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stop polling; the jobs keep running for the next gateway to reattach to."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.registry.save()
        if self._http is not None:
            await self._http.close()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gateway.poll_interval_s)
            try:
                await self.poll_once()
            except Exception:  # one bad poll must not end polling
                log.exception("gateway poll failed")

    # --- state -----------------------------------------------------------------------------
    def jobs_of(self, model: str) -> list[Job]:
        return [j for j in self.registry.jobs.values() if j.model == model and not j.draining]

    def model_state(self, model: str) -> dict:
        jobs = self.jobs_of(model)
        running = [j for j in jobs if j.state == "running"]
        where = {"sites": sorted({j.site for j in jobs})}
        if errors := self.sites.errors(model):
            where["site_errors"] = errors
        if running:
            return {"state": "running", "replicas": len(running), "hosts": sorted({f"{j.host}:{j.port}" for j in running}),
                    "jobs": [j.id for j in jobs], **where}
        for state in ("starting", "queued"):
            if any(j.state == state for j in jobs):
                return {"state": state, "replicas": 0, "jobs": [j.id for j in jobs], **where}
        return {"state": "cold", "replicas": 0, "jobs": [], **where}

    def pick(self, model: str) -> Replica | None:
        """The running replica of `model` with the fewest requests in flight."""
        live = [r for r in self.replicas.values() if r.job.model == model and not r.job.draining]
        return min(live, key=lambda r: r.outstanding) if live else None

    def touch(self, model: str) -> None:
        self.last_used[model] = time.monotonic()

    # --- actions ---------------------------------------------------------------------------
    async def ensure(self, model: str) -> None:
        """A cold model gets one job (a model with a job queued or starting gets none more)."""
        async with self._lock:
            if not self.jobs_of(model):
                await self._submit(model)

    async def _submit(self, model: str, why: str | None = None) -> Job | None:
        """One job for `model` at the best site that takes it (SiteChooser's order); None when none does."""
        spec = self.cfg.models[model]
        failed: list[str] = []
        for site_name in self.sites.order(model, self.registry.jobs.values()):
            try:
                job = await asyncio.to_thread(self.schedulers[site_name].submit, spec)
            except (LaunchError, OSError) as err:  # sbatch/qsub refused, or a local site's python cannot start
                reason = err.message + (f" (fix: {err.hint})" if err.hint else "") if isinstance(err, LaunchError) else str(err)
                log.warning("site %s could not take a job of %s: %s", site_name, model, reason)
                self.sites.failed(site_name, f"submission failed: {reason}")
                failed.append(site_name)
                continue
            notes = [why] if why else []
            if failed:
                notes.append(f"submission failed at {', '.join(failed)} (see site_errors in /v1/models)")
            job.note = "; ".join(notes) or None
            self.registry.jobs[job.id] = job
            self.registry.submits += 1
            self.registry.save()
            log.info("submitted job %s for %s on %s%s", job.id, model, site_name, f" ({job.note})" if job.note else "")
            self._changed.set()
            return job
        log.warning("no site of %s took another job%s", model, f" (failed: {', '.join(failed)})" if failed else "")
        return None

    async def remove(self, job: Job, cancel: bool = True) -> None:
        """Forget a job (cancelling it unless it is already gone) and its replica."""
        self.replicas.pop(job.id, None)
        if self.registry.jobs.pop(job.id, None) is None:
            return
        scheduler = self.schedulers[job.site]
        if cancel:
            await asyncio.to_thread(scheduler.cancel, job)
        scheduler.cleanup(job.token)
        self.registry.save()
        self._changed.set()

    async def replica_failed(self, replica: Replica) -> None:
        """A backend broke a request: remove it and start a replacement."""
        log.warning("backend %s of %s failed; replacing it", replica.job.id, replica.job.model)
        await self.remove(replica.job)
        async with self._lock:
            if len(self.jobs_of(replica.job.model)) < self.cfg.models[replica.job.model].max_replicas:
                await self._submit(replica.job.model)

    async def wait_running(self, model: str, timeout_s: float) -> Replica | None:
        deadline = time.monotonic() + timeout_s
        while (replica := self.pick(model)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not self.jobs_of(model):
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, self.cfg.gateway.poll_interval_s))
            except asyncio.TimeoutError:
                pass
        return replica

    # --- polling ---------------------------------------------------------------------------
    async def poll_once(self) -> None:
        for job in list(self.registry.jobs.values()):
            await self._poll_job(job)
        for model in self.cfg.models:
            await self._renew(model)
            await self._scale(model)
        # off the event loop: a file write there would stall every request in flight
        await asyncio.to_thread(self.registry.write, self.registry.snapshot())

    async def _poll_job(self, job: Job) -> None:
        scheduler = self.schedulers[job.site]
        status = await asyncio.to_thread(scheduler.status, job)
        if status == "gone":
            log.warning("job %s of %s is gone", job.id, job.model)
            if job.running_since is None:  # never answered: the site could not run it
                self.sites.failed(job.site, f"job {job.id} ended before its server answered; its log: {scheduler.files(job.token)[2]}")
            await self.remove(job, cancel=False)
            return
        if job.running_since is None and await self._start_timed_out(job):  # (a reattached job once ran: not late)
            return
        if status == "queued":
            job.state = "queued"
            return
        if job.state == "queued":
            job.state = "starting"
            self._changed.set()
        if job.id in self.replicas:
            return
        _, endpoint, _ = scheduler.files(job.token)
        try:
            where = json.loads(endpoint.read_text())
        except (OSError, ValueError):
            return  # the job has not published its port yet
        base = f"http://{where['host']}:{where['port']}"
        try:
            async with self.http.get(base + "/health", timeout=aiohttp.ClientTimeout(total=2.0)) as answer:
                healthy = answer.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            healthy = False
        if healthy:
            job.state, job.host, job.port = "running", where["host"], where["port"]
            job.running_since = job.running_since or time.time()
            self.replicas[job.id] = Replica(job, base, scheduler.key(job.token))
            self.touch(job.model)  # a model that just came up starts its idle clock now
            log.info("job %s of %s is running at %s", job.id, job.model, base)
            self._changed.set()

    async def _start_timed_out(self, job: Job) -> bool:
        """A job not running within start_timeout_s, of a model with another site: cancel it and submit
        the replacement elsewhere. With one site the job is left in its queue (a new one would queue last)."""
        waited = time.time() - job.submitted_at
        if waited <= self.cfg.gateway.start_timeout_s or len(self.cfg.models[job.model].sites) < 2:
            return False
        reason = f"job {job.id} was not running after {waited:.0f} s (start_timeout_s)"
        log.warning("%s at site %s: trying another site", reason, job.site)
        self.sites.failed(job.site, reason)
        await self.remove(job)
        async with self._lock:
            if len(self.jobs_of(job.model)) < self.cfg.models[job.model].max_replicas:
                await self._submit(job.model, why=f"replaces {job.id}, not running at {job.site} within start_timeout_s")
        return True

    async def _scale(self, model: str) -> None:
        spec = self.cfg.models[model]
        jobs = self.jobs_of(model)
        live = [r for r in self.replicas.values() if r.job.model == model and not r.job.draining]
        busy = sum(r.outstanding for r in live)
        idle_for = time.monotonic() - self.last_used[model]
        settled = len(live) == len(jobs)  # a job still starting was asked for: its idle clock starts when it runs
        if busy == 0 and settled and idle_for > self.cfg.gateway.idle_timeout_s and len(jobs) > spec.min_replicas:
            # the newest go first: the oldest are the warmest
            for job in sorted(jobs, key=lambda j: j.submitted_at, reverse=True)[: len(jobs) - spec.min_replicas]:
                log.info("model %s idle for %.0f s: cancelling job %s", model, idle_for, job.id)
                await self.remove(job)
            return
        async with self._lock:
            starting = len(jobs) - len(live)
            wanted = len(jobs) < spec.min_replicas
            crowded = live and starting == 0 and all(r.outstanding >= spec.scale_up_outstanding for r in live)
            if len(jobs) < spec.max_replicas and (wanted or crowded):
                await self._submit(model)

    async def _renew(self, model: str) -> None:
        """Replace jobs near their walltime: start the successor first, stop routing to the old job once
        the successor runs, and cancel the old one when its last request is answered."""
        for job in [j for j in self.registry.jobs.values() if j.model == model]:
            if job.draining:
                replica = self.replicas.get(job.id)
                if replica is None or replica.outstanding == 0:
                    log.info("job %s of %s drained: cancelling it", job.id, model)
                    await self.remove(job)
                continue
            site = self.cfg.sites[job.site]
            if job.state != "running" or site.walltime_s is None or job.running_since is None:
                continue
            if job.replaced_by is not None and job.replaced_by not in self.registry.jobs:
                job.replaced_by = None  # the successor died: start another
            if job.replaced_by is None and time.time() >= job.running_since + site.walltime_s - site.renew_before_s:
                log.info("job %s of %s nears its walltime: starting its successor", job.id, model)
                successor = await self._submit(model)
                job.replaced_by = successor.id if successor else None
            elif job.replaced_by in self.replicas:
                job.draining = True
                self._changed.set()
