"""Commands a test module starts at the beginning of the session, in a background thread, and checks
later (a uniquely named module; several test folders have a conftest).

A module whose work is long single-process jobs (one core each) and whose assertions read only those
jobs' outputs names the commands in `EARLY_COMMANDS` ({name: argv}, run in that order in one folder,
after writing `EARLY_FILES` ({name: text}) there); the tests/conftest.py hook queues them when
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
    """Commands run one after another in `folder`, each to its end whatever the others' exit codes
    (the tests check those): `results` holds each one's CompletedProcess, `seconds` its own wall time."""

    def __init__(self, commands: dict[str, list[str]], folder: Path, files: dict[str, str] | None = None) -> None:
        self.commands, self.folder = commands, folder
        for name, text in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.seconds: dict[str, float] = {}
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
            for name, argv in self.commands.items():
                if self._stopped.is_set():
                    return
                started = time.monotonic()
                self._proc = subprocess.Popen(argv, cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True)
                out, err = self._proc.communicate()
                self.seconds[name] = time.monotonic() - started
                self.results[name] = subprocess.CompletedProcess(argv, self._proc.returncode, out, err)
        finally:
            self._done.set()

    def wait(self, timeout: float) -> dict[str, subprocess.CompletedProcess]:
        """Every command's result once all ran (run here if nobody began them)."""
        self.run()
        if not self._done.wait(timeout):
            self.stop()
            raise AssertionError(f"the commands did not finish within {timeout:.0f} s: {list(self.commands)}")
        assert list(self.results) == list(self.commands), f"stopped after {list(self.results)}"
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
