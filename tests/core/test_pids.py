"""One answer to "does this writer still run?": a zombie has ended, a dead writer's temporaries go."""

from __future__ import annotations

import os
import subprocess
import sys

from auroragpt import pids
from auroragpt.atomic import remove_orphaned_temporaries


def test_a_running_process_is_alive_and_an_uncollected_zombie_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert pids.alive(child.pid)
        child.stdin.close()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not collected: a zombie
        assert not pids.alive(child.pid)
    finally:
        child.wait()
    assert not pids.alive(child.pid)


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"data.bin.tmp{dead_pid}"
    live = tmp_path / f"data.idx.tmp{os.getppid()}"
    mine = tmp_path / f"data.json.tmp{os.getpid()}"
    other = tmp_path / "notes.tmpx"
    for path in (orphan, live, mine, other):
        path.write_text("half")
    remove_orphaned_temporaries(tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, other))
