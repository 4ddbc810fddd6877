"""Small post-training tasks whose answers are verifiably right, built locally (the demo's SFT and DPO data)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from auroragpt.atomic import write_atomically


def arithmetic_question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def arithmetic_answer(a: int, b: int, total: int | None = None) -> str:
    return f"{a} + {b} = {a + b if total is None else total}"


def write_arithmetic_tasks(out_dir: str | os.PathLike, sft_examples: int = 512, pairs: int = 512,
                           seed: int = 0) -> tuple[Path, Path]:
    """sft.jsonl (chats answering small additions) and dpo.jsonl (the right sum chosen, a wrong one rejected)."""
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chats = []
    for _ in range(sft_examples):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        chats.append({"messages": [{"role": "user", "content": arithmetic_question(a, b)},
                                   {"role": "assistant", "content": arithmetic_answer(a, b)}]})
    prefs = []
    for _ in range(pairs):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        wrong = rng.choice([t for t in range(19) if t != a + b])
        prompt = [{"role": "user", "content": arithmetic_question(a, b)}]
        prefs.append({"prompt": prompt, "chosen": arithmetic_answer(a, b), "rejected": arithmetic_answer(a, b, wrong)})
    sft, dpo = out / "sft.jsonl", out / "dpo.jsonl"
    write_atomically(sft, "".join(json.dumps(c) + "\n" for c in chats))
    write_atomically(dpo, "".join(json.dumps(p) + "\n" for p in prefs))
    return sft, dpo


def score_arithmetic(prompt, completion: str) -> float:
    """1.0 when the completion states the right sum of the question in `prompt`, else 0.0 (a demo scorer)."""
    import re

    text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
    found = re.search(r"What is (\d+) plus (\d+)\?", text)
    said = re.search(r"=\s*(-?\d+)", completion)
    return float(bool(found and said and int(said.group(1)) == int(found.group(1)) + int(found.group(2))))
