"""`python e2e_kill_wrapper.py STEP train ...`: `auroragpt train ...`, except that when the metrics
of step STEP are written, the job's launcher (`auroragpt launch`) is killed with SIGKILL, as an
operator or the scheduler would: at a known moment between two checkpoints, so a test is
deterministic instead of racing the run."""

from __future__ import annotations

import os
import signal
import sys
import time

from auroragpt.train import metrics

KILL_AT = int(sys.argv[1])
_write = metrics.MetricsWriter.write


def write_then_kill(self, record):
    _write(self, record)
    if self.enabled and record.get("step") == KILL_AT:  # rank 0, once its line is written
        os.kill(int(os.environ["AURORAGPT_LAUNCHER_PID"]), signal.SIGKILL)
        time.sleep(120)  # the launcher's death must end this rank, not this script


metrics.MetricsWriter.write = write_then_kill

if __name__ == "__main__":
    from auroragpt.cli import main

    sys.exit(main(sys.argv[2:]))
