"""Errors a user can fix. The CLI prints them as one paragraph, without a traceback."""

from __future__ import annotations


class AuroraError(Exception):
    """Base of every user-facing error: what went wrong, and (as `hint`) what to do about it."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class ConfigError(AuroraError):
    """A configuration file, override or argument is invalid."""


class DataError(AuroraError):
    """A dataset, data-file-list or corpus is missing, malformed or inconsistent."""


class DistError(AuroraError):
    """The distributed environment cannot be set up as asked."""


class LaunchError(AuroraError):
    """A job cannot be launched as asked (allocation, hostfile, launcher)."""
