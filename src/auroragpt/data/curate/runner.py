"""Run per-shard work over worker processes and launcher ranks, resumably and deterministically.

Shard k belongs to rank k % world_size; a rank runs its shards on `workers` processes
(`OrderedPool`, results in shard order). A shard's outputs depend only on the shard, the settings
and (for dedup) the global decisions, never on who computed them, so 1, 2 or N workers or ranks
write byte-identical files. Each shard's recipe is written last, atomically: a killed run leaves
finished shards (reused on the next run) and temporary files (removed when their writer is dead).
Ranks exchange small objects over torch.distributed (gloo on CPU), set up by `runtime.setup`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

from auroragpt.atomic import remove_orphaned_temporaries, streaming_atomically, write_atomically
from auroragpt.data.curate.shards import Shard, input_id
from auroragpt.errors import AuroraError, DataError, DistError

RUN_RECIPE = "curation.json"  # not *.recipe.json: that pattern names shard recipes
OUTPUT_SUFFIXES = (".jsonl", ".ledger.jsonl", ".recipe.json")


@dataclass
class Ranks:
    """This process's place among the launcher's ranks, and the exchanges curation needs."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_launcher(cls) -> "Ranks":
        from auroragpt.runtime.env import read_rank_info

        info = read_rank_info()
        if info.world_size == 1:
            return cls()
        from auroragpt.runtime.setup import setup

        dist = setup()
        return cls(dist.rank, dist.world_size)

    def mine(self, shards: Sequence[Shard]) -> list[Shard]:
        return [s for s in shards if s.index % self.world_size == self.rank]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        with self._peers():
            dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        with self._peers():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def _peers(self) -> Iterator[None]:
        """A peer that died (its own error already printed) becomes one line here, not a traceback."""
        try:
            yield
        except RuntimeError as err:
            raise DistError(f"rank {self.rank}: another rank of the job stopped ({str(err).splitlines()[0][:200]})",
                            hint="the first failing rank's message above says why") from None

    def everywhere(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on every rank; a user error on any rank is raised on every rank (first rank's first)."""
        result: tuple = (None, None)
        try:
            result = (fn(), None)
        except AuroraError as err:
            result = (None, (type(err), err.message, err.hint))
        outcomes = self.gather(result)
        errors = [(r, e) for r, (_, e) in enumerate(outcomes) if e is not None]
        if errors:
            rank, (kind, message, hint) = errors[0]
            raise kind(message if rank == self.rank else f"on rank {rank}: {message}", hint=hint)
        return [value for value, _ in outcomes]

    def on_rank0(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on rank 0 only; its result, or its user error, reaches every rank."""
        result: tuple = (None, None)
        if self.rank == 0:
            try:
                result = (fn(), None)
            except AuroraError as err:
                result = (None, (type(err), err.message, err.hint))
        value, error = self.broadcast(result)
        if error is not None:
            kind, message, hint = error
            raise kind(message, hint=hint)
        return value

    def close(self) -> None:
        if self.world_size > 1:
            from auroragpt.runtime.setup import teardown

            teardown()


def _call(task: tuple) -> Any:
    fn, args = task
    return fn(*args)


def map_shards(fn: Callable, tasks: Sequence[tuple], workers: int) -> list[Any]:
    """[fn(*args) for args in tasks], on `workers` processes, results in task order."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*args) for args in tasks]
    from auroragpt.data.ordered_pool import OrderedPool, WorkerDiedError

    pool = OrderedPool(_call, min(workers, len(tasks)))
    try:
        results = list(pool.imap(((fn, args) for args in tasks), window=2 * workers))
        pool.close()
    except WorkerDiedError as err:
        raise DataError(f"a curation {err}", hint="finished shards are kept; run the same command again to resume") from None
    finally:
        pool.terminate()
    return results


def prepare_out_dir(out_dir: Path, recipe: dict, force: bool) -> None:
    """Create `out_dir`, or accept it when an earlier run of this same command made it."""
    path = out_dir / RUN_RECIPE
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: --out exists and is not a folder", hint="choose another --out")
    existing = _read_json(path)
    if existing is not None and existing != recipe:
        if not force:
            raise DataError(
                f"{out_dir} holds the outputs of another curation run (other command, inputs or settings; see {path})",
                hint="run that same command again to finish it, pass --force to replace it, or choose another --out",
            )
        for child in out_dir.iterdir():
            if child.name.endswith(OUTPUT_SUFFIXES) or child.name in (RUN_RECIPE, ".work"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif existing is None and out_dir.is_dir() and any(out_dir.glob("*.recipe.json")) and not force:
        raise DataError(f"{out_dir} holds curation outputs without {RUN_RECIPE}",
                        hint="pass --force to replace them, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries([*out_dir.glob("*.tmp*"), *out_dir.glob(".work/*.tmp*")])
    write_json(path, recipe)


def shard_recipe(shard: Shard, command: str, settings: dict, **extra: Any) -> dict:
    return {"command": command, "settings": settings, "input": input_id(shard.path), **extra}


def finished_shard(out_dir: Path, shard: Shard, recipe: dict) -> dict | None:
    """The counts of a shard an earlier run finished with this recipe, else None."""
    found = _read_json(shard.output(out_dir, ".recipe.json"))
    if found is None or any(found.get(k) != v for k, v in recipe.items()):
        return None
    for suffix, meta in found.get("outputs", {}).items():
        path = shard.output(out_dir, suffix)
        if not path.is_file() or path.stat().st_size != meta.get("bytes"):
            return None
    return found.get("counts")


class ShardSink:
    """Where a shard's outputs stream to: kept documents and ledger lines, hashed as they go."""

    def __init__(self, streams: dict[str, IO[bytes]]) -> None:
        self._streams = streams
        self._hashes = {suffix: hashlib.sha256() for suffix in streams}
        self._bytes = dict.fromkeys(streams, 0)

    def _write(self, suffix: str, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        self._streams[suffix].write(data)
        self._hashes[suffix].update(data)
        self._bytes[suffix] += len(data)

    def keep(self, line: str) -> None:
        self._write(".jsonl", line)

    def record(self, entry: dict) -> None:
        self._write(".ledger.jsonl", json.dumps(entry, separators=(",", ":")))

    def outputs(self) -> dict:
        return {s: {"sha256": self._hashes[s].hexdigest(), "bytes": self._bytes[s]} for s in self._streams}


@contextlib.contextmanager
def shard_outputs(out_dir: Path, shard: Shard) -> Iterator[ShardSink]:
    """Stream a shard's outputs to temporaries, renamed when the block succeeds (removed if it
    raises); the caller then writes the recipe with `finish_shard`, which marks the shard done."""
    shard.output(out_dir, ".recipe.json").unlink(missing_ok=True)
    with streaming_atomically(shard.output(out_dir, ".jsonl")) as docs, \
            streaming_atomically(shard.output(out_dir, ".ledger.jsonl")) as ledger:
        yield ShardSink({".jsonl": docs, ".ledger.jsonl": ledger})


def finish_shard(out_dir: Path, shard: Shard, recipe: dict, sink: ShardSink, counts: dict) -> dict:
    write_json(shard.output(out_dir, ".recipe.json"), {**recipe, "outputs": sink.outputs(), "counts": counts})
    return counts


def write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def new_counts(shard: Shard) -> dict:
    return {"shard": shard.label, "corpus": shard.corpus, "documents": 0, "kept": 0, "removed": 0, "changed": 0,
            "words_in": 0, "words_kept": 0, "malformed": 0, "rules": {}}


def count_rule(counts: dict, rule: str, words: int) -> None:
    entry = counts["rules"].setdefault(rule, {"documents": 0, "words": 0})
    entry["documents"] += 1
    entry["words"] += words
