"""Finding and loading a model for inference, whatever form it was saved in.

`load_inference_model` reads a training checkpoint (DCP shards, with no process group: one
process reads every shard of every tensor), a run directory (its latest complete checkpoint), a
model folder (`auroragpt.model.io`) or a Hugging Face Llama folder. Eval, export, serve and
training's `init_from` all load through it, so they import model/ and never train/. The checkpoint
layout it reads (RUN_DIR/checkpoints/step_XXXXXXXX/meta.json) is written by
`auroragpt.train.checkpoint`, which takes these names from here.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from auroragpt.errors import AuroraError
from auroragpt.jsonio import read_json
from auroragpt.model.gpt import GPT
from auroragpt.model.hf_format import is_hf_folder, load_hf
from auroragpt.model.io import is_model_folder, load_model
from auroragpt.model.presets import ModelConfig

CHECKPOINT_NAME = re.compile(r"^step_(\d{8})$")
META = "meta.json"


class CheckpointError(AuroraError):
    """A checkpoint is missing, incomplete or does not fit the model."""


def checkpoints_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    return checkpoints_root(run_dir) / f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first (only complete ones carry the final name)."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CHECKPOINT_NAME.match(p.name) and (p / META).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None



@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns that it runs in one process whenever no group exists: that is our intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")
        yield



def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's meta.json, or one CheckpointError naming the file."""
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {META})",
                              hint="pass a RUN_DIR/checkpoints/step_XXXXXXXX directory or a run directory")
    meta = read_json(meta_file, CheckpointError, want=dict,
                     hint="the checkpoint cannot be trusted; use an earlier one (a run folder resumes "
                     "from its newest intact checkpoint)")
    if not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{meta_file} is damaged: it holds no step number", hint="use an earlier checkpoint")
    return meta


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint dir as given, or the latest complete checkpoint of a run dir."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if checkpoints_root(path).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run directory {path} has no complete checkpoint yet")
        return latest
    if is_model_folder(path):
        raise CheckpointError(f"{path} is a model folder (weights only), not a training checkpoint",
                              hint="start a run from its weights with --checkpoint.init_from instead")
    raise CheckpointError(f"{path} is neither a checkpoint nor a run directory",
                          hint="expected RUN_DIR or RUN_DIR/checkpoints/step_XXXXXXXX")


def _dcp_reason(err: BaseException) -> str:
    """The first underlying failure of a DCP error, in one line (its own str holds tracebacks)."""
    failures = getattr(err, "failures", None)
    if failures:
        err = next(iter(failures.values()))[0]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def load_inference_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The consolidated single-device model (eval mode) and its metadata, from a DCP checkpoint,
    a run directory (latest checkpoint), a model folder written by `auroragpt.model.io`, or a
    Hugging Face Llama folder (kept in its stored precision).

    Needs no process group: DCP reads all shards of every tensor in one process.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")

    if is_hf_folder(path):
        model, _ = load_hf(path, None)
        tokenizer = path / "tokenizer.json"
        return model.to(device).eval(), {"tokenizer": str(tokenizer) if tokenizer.is_file() else None, "hf_folder": str(path)}
    if (path / "config.json").is_file() and not (path / META).is_file():
        return load_model(path, device=device)
    from auroragpt.model.checkpoint_integrity import describe_damage, find_damage

    ckpt = resolve_checkpoint(path)
    problems = find_damage(ckpt)  # in this process only: the loader needs no process group
    if problems:
        raise describe_damage(ckpt, problems)
    meta = read_meta(ckpt)
    cfg = ModelConfig.from_dict(meta["model_config"], source=f"{ckpt / META}")
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device=device)
    model.reset_rotary(device)
    state = {"model": model.state_dict()}
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f"checkpoint {ckpt} could not be read: {_dcp_reason(err)}",
                              hint="a missing or cut-short shard means the checkpoint is incomplete; "
                              "use an earlier one") from None
    model.load_state_dict(state["model"])
    model.eval()
    meta = {**meta, "checkpoint": str(ckpt)}
    return model, meta
