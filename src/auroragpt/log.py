"""Logging through the standard `logging` module: rank 0 only unless asked, rich on a terminal."""

from __future__ import annotations

import logging
import sys

from auroragpt import envvars

_ROOT = "auroragpt"


def get_logger(name: str) -> logging.Logger:
    """A child of the package logger; configuring happens once, in `configure`."""
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def configure(rank: int = 0, level: str | None = None) -> None:
    """Attach one handler to the package logger. Ranks other than 0 stay quiet unless asked."""
    logger = logging.getLogger(_ROOT)
    level = (level or envvars.read("AURORAGPT_LOG_LEVEL", "INFO") or "INFO").upper()
    all_ranks = envvars.read("AURORAGPT_LOG_ALL_RANKS", "0") == "1"
    logger.setLevel(level if (rank == 0 or all_ranks) else "WARNING")
    if logger.handlers:
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
