"""Jobs that survive bad nodes: health-check every node first and start on the healthy ones, and
restart after a failure without the node whose rank failed, as long as --min-nodes allows."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from auroragpt.runtime.health import check_nodes, usable_hosts
from auroragpt.runtime.launch import LaunchPlan, LaunchRequest, build_launch_plan


def _say(message: str) -> None:
    print(f"auroragpt launch: {message}", file=sys.stderr, flush=True)


def plan_on(request: LaunchRequest, plan: LaunchPlan, hosts: tuple[str, ...]) -> LaunchPlan:
    """The same job on a subset of its hosts (same ranks per host, as many ranks as still fit)."""
    hostfile = Path(tempfile.mkdtemp(prefix="auroragpt-hosts-")) / "hosts"
    hostfile.write_text("".join(f"{host}\n" for host in hosts))
    slots = len(hosts) * plan.ppn
    nprocs = min(request.nprocs, slots) if request.nprocs is not None else slots
    narrowed = dataclasses.replace(request, hostfile=str(hostfile), ppn=plan.ppn, nhosts=None, nprocs=nprocs,
                                   launcher=plan.launcher)
    return build_launch_plan(narrowed, default_ppn=plan.ppn)


def healthy_plan(request: LaunchRequest, plan: LaunchPlan, min_nodes: int, run_dir: str,
                 timeout_s: float = 120.0, check_launcher: str | None = None) -> LaunchPlan:
    """Check every node of `plan` (through the job's own launcher unless `check_launcher` says
    otherwise); the plan on the healthy ones, or a LaunchError below min_nodes."""
    _say(f"checking {len(plan.hosts)} node(s) before the job")
    results = check_nodes(plan.hosts, plan.ppn, check_launcher or plan.launcher, run_dir, timeout_s=timeout_s)
    bad = {host for host, why in results.items() if why is not None}
    for host in sorted(bad):
        _say(f"node {host} failed its health check: {results[host]}; excluding it")
    if not bad:
        _say("every node passed its health check")
        return plan
    return plan_on(request, plan, usable_hosts(plan.hosts, bad, min_nodes, "the health check"))


def run_excluding_failed(request: LaunchRequest, plan: LaunchPlan, retries: int, min_nodes: int) -> int:
    """Run; after a failure, restart up to `retries` times without the node of the failing rank."""
    from auroragpt.runtime.runner import run_once

    for attempt in range(retries + 1):
        _say(f"running {plan.nprocs} rank(s) on {len(plan.hosts)} host(s): {plan.shell_line()}")
        result = run_once(plan)
        if result.exit_code == 0 or result.interrupted or attempt == retries:
            if result.exit_code and result.failed_rank is not None:
                _say(f"rank {result.failed_rank} failed first, with exit code {result.exit_code}")
            return result.exit_code
        if result.failed_rank is not None and result.failed_rank.isdigit():
            host = plan.hosts[int(result.failed_rank) // plan.ppn]
            _say(f"rank {result.failed_rank} on node {host} failed with exit code {result.exit_code}; "
                 f"restarting without {host} (attempt {attempt + 2} of {retries + 1})")
            plan = plan_on(request, plan, usable_hosts(plan.hosts, {host}, min_nodes, f"rank {result.failed_rank} failed"))
        else:
            _say(f"the job failed (exit code {result.exit_code}) without naming a rank; restarting on the same nodes")
    return 1
