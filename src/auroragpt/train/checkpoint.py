"""Checkpoints with torch.distributed.checkpoint (DCP), crash-safe and reshardable.

Layout: RUN_DIR/checkpoints/step_XXXXXXXX/ holding the DCP shards of {"model", "optim"}, one
`rank_XXXXX.pt` per rank (RNG states) and `meta.json` (step, tokens, loader and guard state,
config, model config, tokenizer, data mix, and the SHA-256 and size of every other file, checked
before a load: see checkpoint_integrity.py). Every rank writes into `step_XXXXXXXX.tmp`; rank 0
renames it to its final name only after all ranks finished, so a directory named `step_XXXXXXXX`
is always complete, and a kill at any moment leaves the previous checkpoint loadable. Old
checkpoints are first renamed out of the way, then deleted, for the same reason.

DCP stores every tensor with its global shape, so a checkpoint saved on N ranks loads on M ranks
under any layout, and `auroragpt.model.loading.load_inference_model` reads it with no process group.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from auroragpt.atomic import write_atomically
from auroragpt.log import get_logger
from auroragpt.model.checkpoint_integrity import describe_damage, find_damage, record_files
from auroragpt.model.loading import (  # noqa: F401  (the checkpoint layout, shared with the loader)
    CHECKPOINT_NAME,
    META,
    CheckpointError,
    _dcp_reason,
    _quiet_single_process,
    checkpoint_path,
    checkpoints_root,
    latest_checkpoint,
    list_checkpoints,
    read_meta,
    resolve_checkpoint,
)

log = get_logger(__name__)

__all__ = ["CheckpointError", "Checkpointer", "read_meta", "resolve_checkpoint", "latest_checkpoint"]


def remove_incomplete(run_dir: str | os.PathLike[str]) -> None:
    """Delete leftovers of killed saves and deletions (rank 0, before training starts)."""
    root = checkpoints_root(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if ".tmp" in p.name or ".trash" in p.name:
                shutil.rmtree(p, ignore_errors=True)


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier(group: Any = None) -> None:
    if _world() > 1:
        dist.barrier(group=group)


class Checkpointer:
    """Saves and loads training state; every rank calls every method (they are collective)."""

    def __init__(self, run_dir: str | os.PathLike[str], keep_last: int, async_save: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.async_save = async_save
        self._pending: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.last_save_s: float | None = None  # seconds the last save blocked training
        # Async uploads run collectives from a background thread: give them their own gloo group
        # so they never interleave with the training collectives.
        self._group = dist.new_group(backend="gloo") if async_save and _world() > 1 else None

    def save(self, step: int, model_parts: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer], meta: dict[str, Any]) -> None:
        """Write checkpoint `step` (blocking unless async_save; then it finishes in the background
        and is published as soon as every rank's data is on disk).

        `model_parts` are this rank's modules (several with virtual pipeline stages), each with
        its own optimizer; their state dicts use the single-device names, so they merge.
        """
        self.wait()
        started = time.perf_counter()
        final = checkpoint_path(self.run_dir, step)
        tmp = final.with_name(final.name + ".tmp")
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        state = training_state(model_parts, optimizers)
        torch.save(capture_rng(), tmp / f"rank_{_rank():05d}.pt")
        meta = {**meta, "step": step, "world_size": _world()}
        if self.async_save:
            with _quiet_single_process():
                future = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self._group,
                                        no_dist=not dist.is_initialized())
            self._pending = threading.Thread(target=self._publish_when_written, args=(future, tmp, final, meta),
                                             name=f"checkpoint-{step}", daemon=True)
            self._pending.start()
        else:
            with _quiet_single_process():
                dcp.save(state, checkpoint_id=str(tmp), no_dist=not dist.is_initialized())
            self._finish(tmp, final, meta, None)
        self.last_save_s = time.perf_counter() - started

    def _publish_when_written(self, future: Any, tmp: Path, final: Path, meta: dict[str, Any]) -> None:
        try:
            future.result()
            self._finish(tmp, final, meta, self._group)
        except BaseException as err:  # noqa: BLE001 - re-raised on the training thread by wait()
            self._failure = err

    def wait(self) -> None:
        """Finish an async save still in flight (called before the next save and at the end)."""
        if self._pending is None:
            return
        self._pending.join()
        self._pending = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _finish(self, tmp: Path, final: Path, meta: dict[str, Any], group: Any) -> None:
        _barrier(group)
        files = record_files(tmp, group)
        if _rank() == 0:
            write_atomically(tmp / META, json.dumps({**meta, "files": files}, indent=1), durable=True)
            if final.exists():
                _discard(final)
            os.replace(tmp, final)
            self._prune()
            log.info("checkpoint saved: %s", final)
        _barrier(group)

    def _prune(self) -> None:
        for old in list_checkpoints(self.run_dir)[: -self.keep_last]:
            _discard(old)

    def load(self, path: str | os.PathLike[str], model_parts: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
        """Load model and optimizer state in place (any saved layout onto this one), restore this
        rank's RNG when the world size matches, and return the checkpoint's meta.json."""
        path = Path(path)
        problems = find_damage(path)  # collective: every rank raises together, none waits alone
        if problems:
            raise describe_damage(path, problems)
        meta = read_meta(path)
        state = training_state(model_parts, optimizers)
        try:
            with _quiet_single_process():
                dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
        except (Exception, CheckpointException) as err:  # CheckpointException is a BaseException
            raise CheckpointError(f"checkpoint {path} could not be loaded into this model: {_dcp_reason(err)}",
                                  hint="resume with the model config the checkpoint was saved with (its "
                                  "meta.json records it); a missing shard means the checkpoint is incomplete") from None
        for part, optimizer in zip(model_parts, optimizers):
            set_model_state_dict(part, state["model"], options=_OPTIONS)
            set_optimizer_state_dict(part, optimizer, state["optim"], options=_OPTIONS)
        rng_file = path / f"rank_{_rank():05d}.pt"
        if meta.get("world_size") == _world() and rng_file.is_file():
            restore_rng(torch.load(rng_file, weights_only=False))
        else:
            log.info("checkpoint saved on %s ranks, loading on %s: RNG states are reseeded, not restored",
                     meta.get("world_size"), _world())
        return meta


# strict=False: a pipeline stage holds only some of the model's keys; flat optimizer keys
# ("state.layers.0.attention.wq.weight.exp_avg") merge across stages and reshard across layouts.
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True, strict=False)


def training_state(model_parts: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
    """{"model": ..., "optim": ...} merged over this rank's model parts, keyed by parameter name."""
    model_sd: dict[str, Any] = {}
    optim_sd: dict[str, Any] = {}
    for part, optimizer in zip(model_parts, optimizers, strict=True):
        model_sd.update(get_model_state_dict(part, options=_OPTIONS))
        optim_sd.update(get_optimizer_state_dict(part, optimizer, options=_OPTIONS))
    return {"model": model_sd, "optim": optim_sd}


def _discard(path: Path) -> None:
    trash = path.with_name(path.name + f".trash-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


