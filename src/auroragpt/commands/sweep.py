"""`auroragpt sweep SPEC.toml` (plan + job scripts), `sweep task SPEC` (one array task),
`sweep ensemble SPEC` (pending trials side by side inside one allocation), `sweep results DIR`."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="hyperparameter sweeps: plan, job arrays, tasks, results",
        description="auroragpt sweep SPEC.toml writes plan.json and PBS/Slurm array scripts for the trials not "
        "finished yet. 'sweep task SPEC' runs the trial of $PBS_ARRAY_INDEX / $SLURM_ARRAY_TASK_ID; "
        "'sweep ensemble SPEC' runs pending trials on groups of the allocation's nodes; "
        "'sweep results DIR' prints and plots every trial.",
        usage="auroragpt sweep SPEC.toml [--nodes N] | sweep task SPEC [--index I] | "
        "sweep ensemble SPEC [--nodes-per-trial N] | sweep results DIR",
    )
    p.add_argument("what", help="SPEC.toml, or one of: task, ensemble, results")
    p.add_argument("target", nargs="?", help="SPEC.toml (task, ensemble) or the sweep folder (results)")
    p.add_argument("--index", type=int, default=None, help="task: the trial index (default: the array variable)")
    p.add_argument("--hostfile", default=None, help="task: run the trial on these hosts (the ensemble sets it)")
    p.add_argument("--nodes", type=int, default=1, help="nodes per array task in the scripts")
    p.add_argument("--nodes-per-trial", type=int, default=1, help="ensemble: nodes of the allocation per trial")
    p.add_argument("--goal", choices=("min", "max"), default="min", help="results: sort order")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auroragpt.errors import ConfigError
    from auroragpt.sweep.spec import load_spec

    if args.what in ("task", "ensemble", "results") and not args.target:
        raise ConfigError(f"auroragpt sweep {args.what} needs a {'folder' if args.what == 'results' else 'SPEC.toml'}",
                          hint=f"e.g. auroragpt sweep {args.what} {'sweeps/lr' if args.what == 'results' else 'sweep.toml'}")
    if args.what == "results":
        from auroragpt.sweep.results import report

        print(report(args.target, args.goal))
        return 0
    if args.what == "task":
        from auroragpt.sweep.task import array_index, run_task

        run_task(load_spec(args.target), args.index if args.index is not None else array_index(), args.hostfile)
        return 0
    if args.what == "ensemble":
        from auroragpt.sweep.ensemble import run_ensemble

        return run_ensemble(load_spec(args.target), args.nodes_per_trial)
    from auroragpt.sweep.plan import pending, write_scripts

    spec = load_spec(args.what)
    scripts = write_scripts(spec, args.nodes)
    if not scripts:
        print(f"sweep {spec.dir}: every trial is finished; nothing to submit "
              f"(auroragpt sweep results {spec.dir})")
        return 0
    todo = pending(spec)
    print(f"sweep {spec.dir}: {len(todo)} trial(s) to run: {todo}")
    for name, path in scripts.items():
        submit = {"slurm": "sbatch", "pbs": "qsub"}.get(name, "inside an allocation: bash")
        print(f"  {name:<9} {submit} {path}")
    return 0
