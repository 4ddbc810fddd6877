"""Checksums of checkpoint files: recorded when a checkpoint is published, verified before loading.

Without them, a shard with garbage in the middle loads silently and the run later blames the
learning rate, and a truncated or damaged file fails inside DCP with tracebacks that name no file.
Every file of a checkpoint (DCP shards, `.metadata`, the per-rank RNG files) gets a SHA-256 and
its size in `meta.json["files"]`; the ranks split the hashing between them, so a checkpoint of
any size costs each rank only its share, and they all reach the same verdict together (a rank
that found a bad file never leaves the others waiting in a collective).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch.distributed as dist

from auroragpt.model.loading import META, CheckpointError, read_meta

CHUNK = 8 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _rank_world(group: Any = None) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _gather(local: Any, group: Any = None) -> list[Any]:
    rank, world = _rank_world(group)
    if world == 1:
        return [local]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, local, group=group)
    return out


def _share(names: list[str], group: Any) -> list[str]:
    rank, world = _rank_world(group)
    return sorted(names)[rank::world]


def record_files(folder: Path, group: Any = None) -> dict[str, dict[str, Any]]:
    """{file name: {"sha256", "bytes"}} for every file of a written checkpoint (collective)."""
    names = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(META)]
    local = {name: {"sha256": sha256_of(folder / name), "bytes": (folder / name).stat().st_size}
             for name in _share(names, group)}
    merged: dict[str, dict[str, Any]] = {}
    for part in _gather(local, group):
        merged.update(part)
    return dict(sorted(merged.items()))


def find_damage(folder: Path, group: Any = None) -> list[str]:
    """What is wrong with a checkpoint (empty when intact); every rank gets the same list (collective).

    A checkpoint written before checksums were recorded is checked for completeness only.
    """
    problems: list[str] = []
    try:
        meta = read_meta(folder)
    except CheckpointError as err:
        problems.append(err.message)
        meta = None
    files = meta.get("files") if meta else None
    if isinstance(files, dict):
        for name in _share(list(files), group):
            problems.extend(_check_file(folder / name, files[name]))
    return sorted({p for part in _gather(problems, group) for p in part})


def _check_file(path: Path, expected: Any) -> list[str]:
    if not isinstance(expected, dict):
        return [f"{path.parent / META} is damaged: no checksum for {path.name}"]
    if not path.is_file():
        return [f"{path} is missing"]
    size = path.stat().st_size
    if size != expected.get("bytes"):
        return [f"{path} holds {size:,} bytes instead of the {expected.get('bytes'):,} it was saved with "
                "(cut short or overwritten)"]
    if sha256_of(path) != expected.get("sha256"):
        return [f"{path} is damaged: its SHA-256 differs from the one recorded at save time"]
    return []


def describe_damage(folder: Path, problems: list[str]) -> CheckpointError:
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return CheckpointError(f"checkpoint {folder} cannot be used: {shown}",
                           hint="load an earlier checkpoint (a run folder as checkpoint.load_from, or this run "
                           "resumed, falls back to its newest intact one), or re-copy the damaged files")


def newest_intact(candidates: list[Path], group: Any = None, warn: Any = None) -> Path | None:
    """The newest of `candidates` (oldest first) with no damage; each skipped one is reported
    through `warn(message)`. None when there are none; raises when all are damaged."""
    skipped: list[str] = []
    for folder in reversed(candidates):
        problems = find_damage(folder, group)
        if not problems:
            if skipped and warn is not None:
                warn(f"using {folder.name}: skipped the newer damaged checkpoint(s): " + "; ".join(skipped))
            return folder
        skipped.append(f"{folder.name} ({problems[0]})")
    if skipped:
        raise CheckpointError("no intact checkpoint to continue from: " + "; ".join(skipped),
                              hint="re-copy the damaged files, or set checkpoint.resume=false in a new run.dir "
                              "to start afresh")
    return None
