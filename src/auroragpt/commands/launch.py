"""`auroragpt launch [options] -- CMD ...`: run CMD on N ranks with mpiexec, srun or torchrun."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from auroragpt.runtime.launch import BIND_CHOICES, LAUNCHERS  # tables only: no work on import

    p = subparsers.add_parser(
        "launch",
        help="run a command on N ranks (mpiexec under PBS, srun under Slurm, mpiexec or torchrun locally)",
        description="Run CMD on every rank of the allocation (or the subset chosen by -n/--ppn/--nhosts/--hostfile). "
        "Output is prefixed with the rank; SIGINT/SIGTERM reach every rank; the exit code is the first "
        "failing rank's.",
        usage="auroragpt launch [options] -- CMD [ARGS ...]",
    )
    p.add_argument("-n", "--np", dest="nprocs", type=int, default=None, help="total ranks (default: hosts x ppn)")
    p.add_argument("--ppn", type=int, default=None,
                   help="ranks per host (default: accelerators per host, 1 on a CPU-only host)")
    p.add_argument("--nhosts", type=int, default=None, help="use only the first NHOSTS hosts of the allocation")
    p.add_argument("--hostfile", default=None, help="hosts to use, one per line (default: the scheduler's)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                   help="auto: mpiexec under PBS, srun under Slurm, locally mpiexec if found else torchrun")
    p.add_argument("--bind", choices=BIND_CHOICES, default="auto",
                   help="CPU-binding profile; auto = aurora (8 cores per GPU tile) for mpiexec under PBS on a "
                   "node with Aurora's cores, none elsewhere")
    p.add_argument("--retries", type=int, default=0, help="restart a failed job up to this many times")
    p.add_argument("--check-nodes", action="store_true",
                   help="first run a health check on every node (device, matmul, local all-reduce, free disk) "
                   "and start on the nodes that pass")
    p.add_argument("--min-nodes", type=int, default=None,
                   help="with --check-nodes or --retries on several nodes: the fewest nodes the job may run on "
                   "(default: all of them)")
    p.add_argument("--run-dir", default=".", help="with --check-nodes: the folder whose free disk is checked")
    p.add_argument("--dry-run", action="store_true", help="print the exact command and exit")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command each rank runs (after --)")
    p.set_defaults(func=run)


def _accelerators_here() -> int:
    """Accelerators on this host: the default ranks per host (asks torch, so only when needed)."""
    from auroragpt.runtime.device import detect_device, device_count

    return device_count(detect_device())


def run(args: argparse.Namespace) -> int:
    from auroragpt import envvars
    from auroragpt.runtime.launch import LaunchRequest, build_launch_plan
    from auroragpt.runtime.runner import check_retries, run_plan
    from auroragpt.runtime.scheduler import detect_scheduler
    from auroragpt.runtime.setup import timeout_seconds

    check_retries(args.retries)
    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
    request = LaunchRequest(tuple(command), args.nprocs, args.ppn, args.nhosts, args.hostfile, args.launcher, args.bind)
    one_machine_sized_by_n = args.nprocs is not None and args.hostfile is None and detect_scheduler() == "none"
    needs_default = args.ppn is None and not one_machine_sized_by_n
    if envvars.read("AURORAGPT_DEVICE") or envvars.read("AURORAGPT_BACKEND"):
        from auroragpt.runtime.device import detect_backend, detect_device

        detect_backend(detect_device())  # a bad override fails here, before any rank starts
    timeout_seconds()  # and so does a bad AURORAGPT_DIST_TIMEOUT
    plan = build_launch_plan(request, default_ppn=_accelerators_here() if needs_default else 1)
    if args.dry_run:
        print(plan.shell_line())
        return 0
    if args.check_nodes or (args.retries and len(plan.hosts) > 1):
        from auroragpt.errors import LaunchError
        from auroragpt.runtime.resilient import healthy_plan, run_excluding_failed

        min_nodes = len(plan.hosts) if args.min_nodes is None else args.min_nodes
        if not 1 <= min_nodes <= len(plan.hosts):
            raise LaunchError(f"--min-nodes {min_nodes} must be between 1 and the job's {len(plan.hosts)} node(s)",
                              hint="pass a number of nodes the allocation has")
        if args.check_nodes:
            plan = healthy_plan(request, plan, min_nodes, args.run_dir)
        return run_excluding_failed(request, plan, args.retries, min_nodes)
    return run_plan(plan, retries=args.retries)
