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
import pytest

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


def gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` exits (or is a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


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


@pytest.fixture(scope="module")
def corpus_and_clean_run(tmp_path_factory, tokenizer_path):
    folder = tmp_path_factory.mktemp("interrupted")
    write_corpus(folder / "corpus")
    tokenize_corpora([folder / "corpus"], folder / "clean", tokenizer_path, workers=1)
    return folder / "corpus", folder / "clean"


def start_and_kill(corpus: Path, out: Path, tokenizer_path: Path, victim: str):
    """Start `auroragpt data tokenize` on 2 workers; once one input is finished, SIGKILL `victim`."""
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
            killed = workers[0] if victim == "worker" else proc.pid
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.005)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("tokenize hung after one of its processes was killed") from None
    assert killed is not None, "the run finished before it could be killed"
    if victim == "main":  # its workers notice the parent is gone and exit instead of hanging
        alive = [pid for pid in workers if not gone(pid, timeout=20)]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        assert not alive, f"workers {alive} outlived their killed parent"
    return cmd, env, proc, stderr


def check_rerun(cmd, env, out: Path, clean: Path, finished: int) -> None:
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reused {finished} finished input(s)" in rerun.stdout
    for suffix in (".bin", ".idx"):
        assert Path(str(out) + suffix).read_bytes() == Path(str(clean) + suffix).read_bytes()
    assert not Path(str(out) + ".parts").exists()
    assert not list(out.parent.glob("*.tmp*"))


def test_killed_worker_then_rerun_matches_clean_run(tmp_path, tokenizer_path, corpus_and_clean_run):
    corpus, clean = corpus_and_clean_run
    out = tmp_path / "run"
    parts = Path(str(out) + ".parts")
    cmd, env, proc, stderr = start_and_kill(corpus, out, tokenizer_path, "worker")
    assert proc.returncode == 2, stderr
    assert "worker process" in stderr and "died" in stderr and "Traceback" not in stderr

    # Only finished, valid datasets are left; no final output appeared.
    assert not Path(str(out) + ".idx").exists()
    finished = sorted(parts.glob("*.idx"))
    assert finished and not [p for p in parts.iterdir() if ".tmp" in p.name]
    for idx in finished:
        IndexedDataset(idx).validate()
    assert len(finished) < 7

    check_rerun(cmd, env, out, clean, len(finished))


def test_killed_main_process_then_rerun_cleans_up(tmp_path, tokenizer_path, corpus_and_clean_run):
    corpus, clean = corpus_and_clean_run
    out = tmp_path / "run"
    cmd, env, proc, _ = start_and_kill(corpus, out, tokenizer_path, "main")
    assert proc.returncode == -signal.SIGKILL
    assert not Path(str(out) + ".idx").exists()
    finished = sorted(Path(str(out) + ".parts").glob("*.idx"))
    check_rerun(cmd, env, out, clean, len(finished))


def test_stale_per_input_temporaries_of_a_dead_run_are_removed(tmp_path, tokenizer_path):
    from auroragpt.data.tokenize import tokenize_corpora

    (tmp_path / "a.jsonl").write_text('{"text": "alpha beta"}\n')
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: its temporaries are garbage
    stale = [tmp_path / f"out_a.bin.tmp{pid}", tmp_path / f"out.idx.tmp{pid}"]
    for path in stale:
        path.write_bytes(b"half-written")
    tokenize_corpora([tmp_path / "a.jsonl"], tmp_path / "out", tokenizer_path, workers=1, per_input=True,
                     shuffle_seed=1)
    assert not any(path.exists() for path in stale)
