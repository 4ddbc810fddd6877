"""Per-node health checks before a job, and the hosts a job may still use after failures.

Each node runs `python -m auroragpt.runtime.health` on its local ranks (through the job's own
launcher): the device is visible, a small matrix product is right, an all-reduce among the
node's ranks adds up, and the run folder's file system has free space. A node that fails, hangs
or cannot start is named and left out; `AURORAGPT_HEALTH_FAIL=host1,host2` makes the named nodes
fail on purpose (fault-injection drills).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auroragpt.errors import LaunchError


def check_this_rank(node: str, run_dir: str, min_free_gib: float) -> None:
    """Raise RuntimeError naming the first check this rank fails."""
    import torch
    import torch.distributed as dist

    from auroragpt import envvars
    from auroragpt.runtime.setup import setup, teardown

    if node in (envvars.read("AURORAGPT_HEALTH_FAIL") or "").split(","):
        raise RuntimeError(f"injected failure (AURORAGPT_HEALTH_FAIL names {node})")
    info = setup()
    try:
        a = torch.arange(64 * 64, dtype=torch.float32, device=info.device).reshape(64, 64) / 4096
        if not torch.allclose((a @ torch.eye(64, device=info.device)).cpu(), a.cpu()):
            raise RuntimeError(f"a 64x64 matrix product on {info.device} gave a wrong result")
        ones = torch.ones(1, device=info.device)
        if dist.is_initialized():
            dist.all_reduce(ones)
        if int(ones.item()) != info.world_size:
            raise RuntimeError(f"an all-reduce among the node's {info.world_size} ranks gave {int(ones.item())}")
        if info.rank == 0:
            folder = Path(run_dir)
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            free = shutil.disk_usage(folder).free / 2**30
            if free < min_free_gib:
                raise RuntimeError(f"only {free:.1f} GiB free on {folder} (needs {min_free_gib} GiB)")
    finally:
        teardown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auroragpt.runtime.health")
    parser.add_argument("--node", required=True)
    parser.add_argument("--run-dir", default=".")
    parser.add_argument("--min-free-gib", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        check_this_rank(args.node, args.run_dir, args.min_free_gib)
    except Exception as err:  # every failure becomes one line naming the node
        print(f"health: node {args.node} FAILED: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


def _check_one(host: str, argv: list[str], timeout_s: float) -> tuple[str, str | None]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return host, f"no answer within {timeout_s:.0f} s"
    if proc.returncode == 0:
        return host, None
    lines = [line for line in proc.stderr.splitlines() if "FAILED" in line or "error" in line.lower()]
    return host, (lines[0].split("FAILED: ", 1)[-1] if lines else f"exit code {proc.returncode}")


def check_nodes(hosts: tuple[str, ...], ppn: int, launcher: str, run_dir: str, min_free_gib: float = 1.0,
                timeout_s: float = 120.0, parallel: int = 8) -> dict[str, str | None]:
    """{host: None if healthy else why}, each node checked by its own ranks through `launcher`."""
    folder = Path(tempfile.mkdtemp(prefix="auroragpt-health-"))
    jobs = []
    for host in hosts:
        hostfile = folder / host
        hostfile.write_text(host + "\n")
        argv = [sys.executable, "-m", "auroragpt.cli", "launch", "--hostfile", str(hostfile), "--ppn", str(ppn),
                "--launcher", launcher, "--", sys.executable, "-m", "auroragpt.runtime.health", "--node", host,
                "--run-dir", run_dir, "--min-free-gib", str(min_free_gib)]
        jobs.append((host, argv))
    with ThreadPoolExecutor(max(1, min(parallel, len(jobs)))) as pool:
        results = dict(pool.map(lambda job: _check_one(job[0], job[1], timeout_s), jobs))
    shutil.rmtree(folder, ignore_errors=True)
    return results


def usable_hosts(hosts: tuple[str, ...], bad: set[str], min_nodes: int, why: str) -> tuple[str, ...]:
    """The hosts left after excluding `bad`; a clear stop when fewer than `min_nodes` remain."""
    left = tuple(h for h in hosts if h not in bad)
    if len(left) < min_nodes:
        raise LaunchError(f"only {len(left)} of {len(hosts)} node(s) are usable after {why} "
                          f"(excluded: {', '.join(sorted(bad))}), but --min-nodes is {min_nodes}",
                          hint="replace the failed nodes (or get a new allocation), or lower --min-nodes")
    return left


if __name__ == "__main__":
    sys.exit(main())
