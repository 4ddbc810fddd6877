"""Iterative preference optimisation in the spirit of MProt-DPO: generate, score, pair, DPO, repeat.

Round r (folder OUT/round_RR) runs four stages, each leaving a finished file that a rerun reuses:

1. generations.jsonl: `samples` completions per prompt from the round's policy (round 0: the DPO
   config's checkpoint.init_from; round r: round r-1's final checkpoint), with the model's
   sampling code (`auroragpt.model.generate`);
2. scores.jsonl: one score per completion from the user's scorer, a Python `module:function`
   called as f(prompt, completion) -> float, or a command reading JSON lines
   {"prompt", "completion"} on stdin and printing one number per line;
3. pairs.jsonl: per prompt, the best completion chosen and the worst rejected (ties dropped),
   tokenized with `data tokenize --format preference` into pairs.{bin,idx};
4. run/: `auroragpt train` on the DPO config with this round's data and policy. The trainer
   resumes from the run's own checkpoint, so a killed round continues where it stopped.

The reference of every round is that round's starting policy (checkpoint.init_from).
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

from auroragpt.atomic import write_atomically
from auroragpt.errors import ConfigError, DataError
from auroragpt.log import get_logger

log = get_logger(__name__)


def load_scorer(spec: str | None, command: str | None) -> Callable[[list, list], list[float]]:
    """A batch scorer (prompts, completions) -> scores from a `module:function` or a command."""
    if bool(spec) == bool(command):
        raise ConfigError("give exactly one of --scorer module:function and --scorer-command")
    if spec:
        module, _, name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"--scorer {spec}: cannot import it ({err})", hint="use package.module:function") from None
        return lambda prompts, completions: [float(fn(p, c)) for p, c in zip(prompts, completions)]

    def run_command(prompts: list, completions: list) -> list[float]:
        lines = "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in zip(prompts, completions))
        done = subprocess.run(shlex.split(command), input=lines, capture_output=True, text=True)
        scores = done.stdout.split()
        if done.returncode != 0 or len(scores) != len(completions):
            raise DataError(f"--scorer-command {command!r} exited {done.returncode} with {len(scores)} scores for "
                            f"{len(completions)} completions: {done.stderr.strip()[:300]}")
        return [float(s) for s in scores]

    return run_command


def read_prompts(path: str | os.PathLike) -> list:
    if not Path(path).is_file():
        raise DataError(f"{path}: prompts file not found", hint="give JSON lines with a 'prompt' per line")
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(json.loads(line)["prompt"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}:{number}: expected a JSON object with a 'prompt' (string or message list)") from None
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def generate_completions(checkpoint: str, prompts: list, samples: int, max_new_tokens: int, seed: int,
                         template_source: str = "default") -> list[dict]:
    """`samples` sampled completions per prompt from the model at `checkpoint`."""
    from auroragpt.data.chat_template import load_chat_template
    from auroragpt.data.tokenizer import load_tokenizer
    from auroragpt.model.generate import generate
    from auroragpt.model.loading import load_inference_model

    model, meta = load_inference_model(checkpoint)
    tokenizer = load_tokenizer(meta["tokenizer"])
    template = load_chat_template(template_source, tokenizer)
    ids = [tokenizer.encode(p) if isinstance(p, str) else template.prompt_ids(p, tokenizer) for p in prompts]
    rows = []
    for k in range(samples):
        outs = generate(model, ids, max_new_tokens=max_new_tokens, temperature=1.0, top_k=40,
                        stop_ids=[tokenizer.eod_id], seed=seed + k)
        rows += [{"prompt": p, "completion": tokenizer.decode(o)} for p, o in zip(prompts, outs)]
    return rows


def make_pairs(rows: list[dict], scores: list[float]) -> list[dict]:
    """Best completion chosen, worst rejected, per prompt; prompts whose samples all tie give none."""
    by_prompt: dict[str, list[tuple[float, str]]] = {}
    prompts: dict[str, object] = {}
    for row, score in zip(rows, scores):
        key = json.dumps(row["prompt"])
        prompts[key] = row["prompt"]
        by_prompt.setdefault(key, []).append((score, row["completion"]))
    pairs = []
    for key, scored in by_prompt.items():
        best, worst = max(scored, key=lambda s: s[0]), min(scored, key=lambda s: s[0])
        if best[0] > worst[0]:
            pairs.append({"prompt": prompts[key], "chosen": best[1], "rejected": worst[1]})
    return pairs


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_round(r: int, out: Path, config: str, policy: str, prompts: list, scorer, samples: int,
              max_new_tokens: int, nprocs: int, overrides: list[str], template: str) -> str:
    """One round; returns the path of its final checkpoint (the next round's policy)."""
    folder = out / f"round_{r:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    generations, scores_file, pairs_file = folder / "generations.jsonl", folder / "scores.jsonl", folder / "pairs.jsonl"
    if not generations.exists():
        _write_jsonl(generations, generate_completions(policy, prompts, samples, max_new_tokens, seed=1000 * r, template_source=template))
    rows = _read_jsonl(generations)
    if not scores_file.exists():
        scores = scorer([x["prompt"] for x in rows], [x["completion"] for x in rows])
        _write_jsonl(scores_file, [{"score": s} for s in scores])
    scores = [x["score"] for x in _read_jsonl(scores_file)]
    if not pairs_file.exists():
        _write_jsonl(pairs_file, make_pairs(rows, scores))
    pairs = _read_jsonl(pairs_file)
    mean = sum(scores) / len(scores)
    log.info("round %d: mean score %.3f over %d completions, %d pairs", r, mean, len(scores), len(pairs))
    if not pairs:
        raise DataError(f"round {r}: every prompt's samples scored the same, so there is no preference pair",
                        hint="raise --samples, or use a scorer that tells completions apart")
    from auroragpt.data.tokenize import tokenize_corpora

    tokenize_corpora([pairs_file], folder / "pairs", _tokenizer_of(policy), fmt="preference",
                     chat_template=template, workers=1, progress=False)
    (folder / "file_list.txt").write_text(f"1.0 {folder / 'pairs'} round{r}\n")
    command = [sys.executable, "-m", "auroragpt.cli", "train", "--config", config, f"--data.file_list={folder / 'file_list.txt'}",
               f"--checkpoint.init_from={policy}", f"--run.dir={folder / 'run'}", *(f"--{o.removeprefix('--')}" for o in overrides)]
    if nprocs > 1:
        command = [sys.executable, "-m", "auroragpt.cli", "launch", "-n", str(nprocs), "--", *command]
    if subprocess.run(command).returncode != 0:
        raise DataError(f"round {r}: DPO training failed (see its log above)", hint="rerun the same command to resume")
    from auroragpt.model.loading import latest_checkpoint

    final = latest_checkpoint(folder / "run")
    write_atomically(folder / "round.json", json.dumps({"round": r, "policy": policy, "result": str(final),
                                                        "mean_score": mean, "pairs": len(pairs)}) + "\n")
    return str(final)


def _tokenizer_of(policy: str) -> str:
    from auroragpt.model.loading import load_inference_model

    tokenizer = load_inference_model(policy)[1].get("tokenizer")
    if not tokenizer:
        raise ConfigError(f"{policy}: records no tokenizer, so its completions cannot be tokenized",
                          hint="start from a checkpoint of a run that had data.tokenizer set")
    return tokenizer


def iterate(config: str, prompts_path: str, out_dir: str, rounds: int, scorer, samples: int = 4,
            max_new_tokens: int = 32, nprocs: int = 1, overrides: list[str] | None = None,
            template: str = "default") -> list[dict]:
    """Run (or resume) `rounds` rounds; returns each round's record (policy, result, mean score, pairs)."""
    from auroragpt.config import load_config

    cfg = load_config(config, overrides or [])
    policy = cfg.checkpoint.init_from
    prompts = read_prompts(prompts_path)
    out = Path(out_dir)
    records = []
    for r in range(rounds):
        done = out / f"round_{r:02d}" / "round.json"
        if done.exists():
            record = json.loads(done.read_text())
        else:
            run_round(r, out, config, policy, prompts, scorer, samples, max_new_tokens, nprocs, overrides or [], template)
            record = json.loads(done.read_text())
        records.append(record)
        policy = record["result"]
    return records
