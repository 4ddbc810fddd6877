"""A tokenize run whose worker is killed by a real signal leaves only finished outputs; rerunning
completes it, and the result is byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from auroragpt.data.indexed import IndexedDataset
from auroragpt.data.tokenize import tokenize_corpora

WORDS = np.array("alpha beta gamma delta epsilon zeta theta lambda sigma omega tensor token corpus".split())


def write_corpus(folder: Path) -> None:
    """A small first file (so a part finishes early) and larger ones after it."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, n_docs in enumerate([40, 500, 500, 500, 500, 500, 500]):
        rows = (json.dumps({"text": " ".join(WORDS[rng.integers(0, len(WORDS), 150)])}) for _ in range(n_docs))
        (folder / f"part{k}.jsonl").write_text("\n".join(rows) + "\n")


def spawned_workers(pid: int) -> list[int]:
    """Worker processes of `pid`: its children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_killed_worker_then_rerun_matches_clean_run(tmp_path, tokenizer_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    tokenize_corpora([corpus], tmp_path / "clean", tokenizer_path, workers=1)

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "auroragpt.cli", "data", "tokenize", str(corpus), "--output-prefix", str(out),
           "--tokenizer", str(tokenizer_path), "--workers", "2", "--chunk-mb", "0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    parts = Path(str(out) + ".parts")
    killed = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        workers = spawned_workers(proc.pid)
        if workers and list(parts.glob("*.idx")):
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
            break
        time.sleep(0.005)
    _, stderr = proc.communicate(timeout=60)
    assert killed is not None, "the run finished before a worker could be killed"
    assert proc.returncode == 2, stderr
    assert "worker process died" in stderr and "Traceback" not in stderr

    # Only finished, valid datasets are left; no final output appeared.
    assert not Path(str(out) + ".idx").exists()
    finished = sorted(parts.glob("*.idx"))
    assert finished and not [p for p in parts.iterdir() if ".tmp" in p.name]
    for idx in finished:
        IndexedDataset(idx).validate()
    assert len(finished) < 7

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reused {len(finished)} finished input(s)" in rerun.stdout
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"run{suffix}").read_bytes() == (tmp_path / f"clean{suffix}").read_bytes()
    assert not parts.exists()
