"""The one `auroragpt` entry point. Subcommands only parse arguments and call library code.

Each subcommand lives in `auroragpt.commands.<name>` and exposes `register(subparsers)`, which adds
its parser and sets `func` to a callable taking the parsed namespace and returning an exit code.
Command modules import nothing heavy at module level, so `auroragpt --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from auroragpt import __version__
from auroragpt.errors import AuroraError, ConfigError

# Order shown in --help. A name whose module is not written yet is left out of the CLI.
COMMANDS = ("launch", "doctor", "data", "train", "eval", "export", "import_", "serve", "sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auroragpt",
        description="Train, evaluate and serve foundation models from a laptop to ten thousand GPU nodes.",
    )
    parser.add_argument("--version", action="version", version=f"auroragpt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"auroragpt.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def _is_other_rank() -> bool:
    """True on ranks other than 0 of a launched job (read from the launcher's variables only)."""
    from auroragpt.runtime.env import read_rank_info

    try:
        return read_rank_info(use_mpi4py=False).rank > 0
    except AuroraError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AuroraError as err:
        if not (isinstance(err, ConfigError) and _is_other_rank()):  # the same config error on 768 ranks: say it once
            print(f"auroragpt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"auroragpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
