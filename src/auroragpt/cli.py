"""The one `auroragpt` entry point. Subcommands only parse arguments and call library code.

Each subcommand lives in `auroragpt.commands.<name>` and exposes `register(subparsers)`, which adds
its parser and sets `func` to a callable taking the parsed namespace and returning an exit code.
Command modules import nothing heavy at module level, so `auroragpt --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from auroragpt import __version__
from auroragpt.errors import AuroraError, ConfigError

# Order shown in --help.
COMMANDS = ("launch", "doctor", "data", "train", "eval", "export", "import_", "serve", "gateway", "post", "weather", "sweep")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in the same one-paragraph form as every other error (exit 2);
    subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n  fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="auroragpt",
        description="Train, evaluate and serve foundation models from a laptop to ten thousand GPU nodes.",
    )
    parser.add_argument("--version", action="version", version=f"auroragpt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"auroragpt.commands.{name}").register(subparsers)
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
    except OSError as err:
        if err.filename is None:
            raise
        # A path the user gave that cannot be read or created: name it, with the system's reason.
        print(f"auroragpt {args.command}: error: {err.filename}: {err.strerror or err}\n"
              "  fix: check the path (an input must exist and be readable; an output must lie in a "
              "folder you can write)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"auroragpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
