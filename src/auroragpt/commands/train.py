"""`auroragpt train --config FILE.toml [--section.key=value ...]`: run or resume a training job.

Start it on many ranks with `auroragpt launch -n N -- auroragpt train --config ...`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from auroragpt.config import override_keys

    sections: dict[str, list[str]] = {}
    for key, _ in override_keys():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(name)
    epilog = "config keys (--section.key=value):\n" + "\n".join(
        f"  [{section}] {', '.join(names)}" for section, names in sections.items())
    parser = subparsers.add_parser(
        "train",
        help="train (or resume) a model from a TOML config",
        description="Train a GPT-style model from scratch, or resume the run in run.dir from its latest checkpoint. "
        "Any config key can be overridden as --section.key=value (for example --train.steps=100).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="TOML run configuration (see configs/)")
    parser.add_argument("--plots-only", action="store_true", help="only redraw the plots and summary of run.dir")
    dry = parser.add_argument_group("dry run (no training: one rank per role on a fake process group)")
    dry.add_argument("--dry-run", action="store_true", help="report memory, collectives, step time and fit, then exit")
    dry.add_argument("--world-size", type=int, default=None, help="ranks of the job to simulate")
    dry.add_argument("--ranks-per-node", type=int, default=None, help="ranks per node (default: the device's)")
    dry.add_argument("--device", default="Max 1550", help="device of the table to predict for (default: Max 1550)")
    add_override_options(parser)
    parser.set_defaults(func=run, overrides=[])


class _Override(argparse.Action):
    """Collects `--section.key value` / `--section.key=value` as "section.key=value" strings, in order."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.overrides = [*namespace.overrides, f"{option_string[2:]}={values}"]


def add_override_options(parser: argparse.ArgumentParser) -> None:
    """One option per config key, generated from the config dataclasses (so --help lists them all
    and a misspelt key is rejected by name)."""
    from auroragpt.config import override_keys

    group = parser.add_argument_group("config overrides (--section.key=value)")
    for key, type_name in override_keys():
        group.add_argument(f"--{key}", action=_Override, metavar=type_name.upper(), help=argparse.SUPPRESS,
                           default=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from auroragpt.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from auroragpt.commands.train_dryrun import run_dry_run

        return run_dry_run(cfg, args.world_size, args.ranks_per_node, args.device)
    if args.plots_only:
        from auroragpt.train.plots import write_plots

        print(write_plots(cfg.run.dir))
        return 0
    from auroragpt.train.trainer import train

    train(cfg)
    return 0
