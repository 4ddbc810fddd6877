"""`auroragpt doctor`: one screen saying what this machine offers a run, and how to fix problems."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check device, backend, scheduler, MPI and versions, with a fix for each problem",
        description="Print what a job started here would use (device, backend, scheduler, MPI, versions) "
        "and, for each problem found, what to do about it. Exits 1 when a problem would stop a run.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auroragpt.runtime.doctor import diagnose, render

    report = diagnose()
    print(render(report))
    return 1 if any(problem.blocking for problem in report.problems) else 0
