"""bench/blend.py at CI size: it generates sparse corpora, builds both blends and prints the ratio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "blend.py"


def test_bench_blend_small_scale_runs_against_megatron(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--tokens", "4e6", "--files", "6", "--corpora", "3", "--seq-len", "256",
         "--lookups", "20000", "--megatron", "--warm", "--clean", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sample look-ups/s" in out.stdout and "megatron-core: built in" in out.stdout and "ratio:" in out.stdout
    assert not any(tmp_path.iterdir())
