"""Commands a test starts at the beginning of the session, in a background thread, and checks later
(a uniquely named module; several test folders have a conftest).

A test whose work is one long single-process job (one core) and whose assertions read only that
job's outputs names the commands in its module's `EARLY_COMMANDS`; the tests/conftest.py hook
starts them as soon as collection ends, so they run on the core the session's single-process tests
leave idle, and the `early_commands` fixture hands them, finished, to the test. Under xdist, or when
the hook did not start them, the fixture starts them itself: the test is the same, only later.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path


class EarlyCommands:
    """Commands run one after another in `folder` (each an argv list); the first failure stops the rest."""

    def __init__(self, commands: list[list[str]], folder: Path, env: dict[str, str] | None = None) -> None:
        self.commands, self.folder = commands, folder
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.results: list[subprocess.CompletedProcess] = []
        self._proc: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="early-commands", daemon=True)

    def start(self) -> EarlyCommands:
        self._thread.start()
        return self

    def _run(self) -> None:
        for argv in self.commands:
            if self._stopped.is_set():
                return
            self._proc = subprocess.Popen(argv, cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
            out, err = self._proc.communicate()
            self.results.append(subprocess.CompletedProcess(argv, self._proc.returncode, out, err))
            if self._proc.returncode != 0:
                return

    def wait(self, timeout: float) -> list[subprocess.CompletedProcess]:
        """The commands' results once all ran (or one failed); every one must have exited with 0."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            raise AssertionError(f"the commands did not finish within {timeout:.0f} s: {self.commands}")
        for result in self.results:
            assert result.returncode == 0, f"{result.args} exited with {result.returncode}:\n{result.stderr[-3000:]}"
        assert len(self.results) == len(self.commands), self.results
        return self.results

    def stop(self) -> None:
        """Kill the command in progress and run no more (the session ended or the wait timed out)."""
        self._stopped.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._thread.join(30)
