"""Start-up work per rank does not grow with the world: every rank opens the same number of
.idx/.bin files on 1, 2 and 4 ranks (counted by an audit hook in each rank), and the time to the
first step is reported for 1, 2, 4 (and, as a benchmark, 8) ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HOOK = '''
import atexit, json, os, sys
_opens = {}
def _count(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.endswith((".idx", ".bin")):
            _opens[os.path.basename(path)] = _opens.get(os.path.basename(path), 0) + 1
sys.addaudithook(_count)
def _dump():
    rank = os.environ.get("RANK")
    if rank is not None and _opens and os.environ.get("OPEN_LOG"):
        with open(os.path.join(os.environ["OPEN_LOG"], f"rank-{rank}-{os.getpid()}.json"), "w") as f:
            json.dump(_opens, f)
atexit.register(_dump)
'''

CONFIG = """
[model]
preset = "tiny"
n_layers = 1
vocab_size = 128
[data]
file_list = "{files}"
seq_len = 32
micro_batch = 2
global_batch = 16
num_workers = 0
[train]
steps = 1
[checkpoint]
every = 1000
[metrics]
plots = false
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from auroragpt.data.indexed import IndexedDatasetWriter

    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for c in range(3):
        with IndexedDatasetWriter(folder / f"c{c}", np.uint16) as writer:
            for _ in range(200):
                writer.add_document(rng.integers(0, 128, size=int(rng.integers(20, 200))))
        lines.append(f"1.0 {folder / f'c{c}'}")
    (folder / "files.txt").write_text("\n".join(lines) + "\n")
    (folder / "hook").mkdir()
    (folder / "hook" / "sitecustomize.py").write_text(HOOK)
    return folder


def start(corpus: Path, tmp_path: Path, world: int) -> tuple[float, dict[int, dict[str, int]]]:
    config = tmp_path / f"run{world}.toml"
    config.write_text(CONFIG.format(files=corpus / "files.txt"))
    logs = tmp_path / f"opens{world}"
    logs.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPEN_LOG": str(logs),
           "PYTHONPATH": os.pathsep.join([str(corpus / "hook"), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", str(world), "--launcher", "torchrun",
                           "--", sys.executable, "-m", "auroragpt.cli", "train", "--config", str(config),
                           f"--run.dir={tmp_path / f'run{world}'}"], capture_output=True, text=True, env=env, timeout=300)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_rank: dict[int, dict[str, int]] = {}
    for path in logs.glob("rank-*.json"):
        rank = int(path.name.split("-")[1])
        for name, count in json.loads(path.read_text()).items():
            per_rank.setdefault(rank, {})[name] = per_rank.get(rank, {}).get(name, 0) + count
    return seconds, per_rank


@pytest.mark.slow  # a scale test: 18 s of rank start-ups on 2 cores
def test_file_reads_per_rank_do_not_grow_with_the_world(corpus: Path, tmp_path: Path) -> None:
    reads, times = {}, {}
    for world in (1, 2, 4):
        times[world], reads[world] = start(corpus, tmp_path, world)
        assert sorted(reads[world]) == list(range(world)), reads[world]
    one = reads[1][0]
    print("opens per rank on 1 rank:", one)
    assert set(one) == {f"c{c}.{ext}" for c in range(3) for ext in ("idx", "bin")}
    for world in (2, 4):
        for rank, opened in reads[world].items():
            assert opened == one, (world, rank, opened, one)
    print("time to first step (launch to exit, 1 step):", {w: f"{t:.1f} s" for w, t in times.items()})


@pytest.mark.slow
def test_time_to_first_step_up_to_8_ranks(corpus: Path, tmp_path: Path) -> None:
    times = {world: start(corpus, tmp_path, world)[0] for world in (1, 2, 4, 8)}
    print("time to first step (launch to exit, 1 step):", {w: f"{t:.1f} s" for w, t in times.items()})
