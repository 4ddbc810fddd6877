"""Commands a test module starts at the beginning of the session, in a background thread, and checks
later (a uniquely named module; several test folders have a conftest).

A module whose work is long single-process jobs (one core each) and whose assertions read only those
jobs' outputs names the commands in `EARLY_COMMANDS`; the tests/conftest.py hook queues them when
collection ends, and one background thread runs the queue one command at a time, on the core the
session's single-process tests leave idle. The `early_commands` fixture hands a module its finished
job; a job the thread has not begun yet (or one the hook did not queue: under xdist) runs in the
test itself, so the test is the same, only later.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


class EarlyCommands:
    """Commands run one after another in `folder` (each an argv list); the first failure stops the rest.
    `results` holds each one's CompletedProcess, and `seconds` its own wall time."""

    def __init__(self, commands: list[list[str]], folder: Path) -> None:
        self.commands, self.folder = commands, folder
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.results: list[subprocess.CompletedProcess] = []
        self.seconds: list[float] = []
        self._claim = threading.Lock()
        self._claimed = False
        self._done = threading.Event()
        self._stopped = threading.Event()
        self._proc: subprocess.Popen | None = None

    def run(self) -> None:
        """Run the commands here unless another thread has begun them (then return at once)."""
        with self._claim:
            if self._claimed:
                return
            self._claimed = True
        try:
            for argv in self.commands:
                if self._stopped.is_set():
                    return
                started = time.monotonic()
                self._proc = subprocess.Popen(argv, cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True)
                out, err = self._proc.communicate()
                self.seconds.append(time.monotonic() - started)
                self.results.append(subprocess.CompletedProcess(argv, self._proc.returncode, out, err))
                if self._proc.returncode != 0:
                    return
        finally:
            self._done.set()

    def wait(self, timeout: float) -> list[subprocess.CompletedProcess]:
        """The commands' results once all ran, run here if nobody began them; each must exit with 0."""
        self.run()
        if not self._done.wait(timeout):
            self.stop()
            raise AssertionError(f"the commands did not finish within {timeout:.0f} s: {self.commands}")
        for result in self.results:
            assert result.returncode == 0, f"{result.args} exited with {result.returncode}:\n{result.stderr[-3000:]}"
        assert len(self.results) == len(self.commands), self.results
        return self.results

    def stop(self) -> None:
        """Run no more commands and kill the one in progress (the session ended or a wait timed out)."""
        self._stopped.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()


def run_in_background(jobs: list[EarlyCommands]) -> threading.Thread:
    """One thread that runs the jobs in order, one command at a time."""
    thread = threading.Thread(target=lambda: [job.run() for job in jobs], name="early-commands", daemon=True)
    thread.start()
    return thread
