"""Shared builders for tests/post (a uniquely named module; several test folders have a conftest)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

WORDS = "alpha beta gamma delta epsilon zeta theta lambda sigma omega".split()
BIN = Path(sys.executable).parent


def make_tokenizer(folder: Path) -> Path:
    from auroragpt.data.tokenizer import train_bpe

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(200)]
    texts += ["<|user|>\nrepeat say\n<|assistant|>\n"] * 20
    train_bpe(texts, 320, folder / "tokenizer.json")
    return folder / "tokenizer.json"


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        out.append({"messages": [{"role": "user", "content": f"repeat {a} {b}"},
                                 {"role": "assistant", "content": f"{a} {b}"}]})
    return out


def preference_records(n: int, seed: int = 0) -> list[dict]:
    """A verifiable task: the chosen answer repeats the prompt's word, the rejected one does not."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a = rng.choice(WORDS)
        wrong = rng.choice([w for w in WORDS if w != a])
        out.append({"prompt": f"say {a}", "chosen": f" {a}", "rejected": f" {wrong}"})
    return out


def child_env(**extra: str) -> dict[str, str]:
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "auroragpt"), *map(str, args)], env=child_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
