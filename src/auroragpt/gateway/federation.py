"""Which of a model's sites its next job goes to, and which sites failed recently.

The policy, best site first:
1. a site where the model already runs (hot: its nodes, file caches and queue priority are warm);
2. then the site with the fewest of this gateway's jobs still waiting there (queued or starting);
3. then the order of the model's `sites` list.
A site at its `max_jobs` is skipped. A site whose submission failed, or whose job did not run
within start_timeout_s or ended before its server answered, goes after every other site for
start_timeout_s (it is still tried when nothing else has room); the failure is shown in
/v1/models (`site_errors`) and the job that went elsewhere says so in /v1/jobs (`note`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from auroragpt.gateway.config import GatewayConfig
from auroragpt.gateway.jobs import Job


@dataclass
class SiteFailure:
    at: float  # time.time() of the failure
    reason: str


class SiteChooser:
    """Ranks a model's sites for a new job and remembers recent site failures."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.failures: dict[str, SiteFailure] = {}

    def failed(self, site: str, reason: str) -> None:
        self.failures[site] = SiteFailure(time.time(), reason)

    def recently_failed(self, site: str) -> bool:
        failure = self.failures.get(site)
        return failure is not None and time.time() - failure.at < self.cfg.gateway.start_timeout_s

    def order(self, model: str, jobs: Iterable[Job]) -> list[str]:
        """The model's sites with room for one more job, best first (see the module's policy)."""
        jobs = list(jobs)
        ranked = []
        for index, name in enumerate(self.cfg.models[model].sites):
            site = self.cfg.sites[name]
            here = [j for j in jobs if j.site == name]
            if site.max_jobs is not None and len(here) >= site.max_jobs:
                continue
            hot = any(j.model == model and j.state == "running" for j in here)
            waiting = sum(1 for j in here if j.state != "running")
            ranked.append(((self.recently_failed(name), not hot, waiting, index), name))
        return [name for _, name in sorted(ranked)]

    def errors(self, model: str) -> dict[str, str]:
        """Recent failures of the model's sites, by site."""
        return {s: self.failures[s].reason for s in self.cfg.models[model].sites if self.recently_failed(s)}
