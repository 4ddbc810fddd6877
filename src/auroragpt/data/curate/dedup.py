"""`data dedup`: exact and near-duplicate removal across all shards, per-shard outputs and ledgers.

Three passes. (1) Per shard, in parallel: a content digest, a word count and (for --near) a MinHash
signature of every document, kept in OUT/.work/LABEL.sig.npz (reused on resume). (2) Decisions over
the whole corpus in input order (`near.py`'s keep rule): ranks share the LSH bands and their
candidate verification, rank 0 merges the verified edges and broadcasts the removals. (3) Per
shard, in parallel: kept documents, ledger and recipe.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from auroragpt.atomic import write_atomically
from auroragpt.data.curate import runner
from auroragpt.data.curate.minhash import MinHashSettings, shingle_sets, signatures
from auroragpt.data.curate.near import (
    bloom_duplicates,
    exact_duplicates,
    keep_first,
    near_duplicates,
    verified_edges,
)
from auroragpt.data.curate.normalize import content_digest, count_words
from auroragpt.data.curate.shards import Shard, dumps_record, iter_documents, plan_shards, read_texts
from auroragpt.data.readers import ReadErrors
from auroragpt.errors import DataError

BATCH = 2048


def dedup(
    inputs: Sequence[str], out_dir: str | Path, *, exact: bool = True, near: bool = False,
    minhash: MinHashSettings | None = None, index: str = "lsh", text_key: str = "text",
    workers: int = 1, on_error: str = "skip", force: bool = False, ranks: runner.Ranks | None = None,
) -> list[dict]:
    """Remove duplicates from `inputs` into `out_dir`; returns every shard's counts (on every rank)."""
    if not (exact or near):
        raise DataError("dedup needs --exact, --near or both")
    if index not in ("lsh", "bloom"):
        raise DataError(f"--index must be 'lsh' or 'bloom', got {index!r}")
    minhash = minhash or MinHashSettings()
    if not 0.0 < minhash.threshold <= 1.0 or minhash.num_perm < 1 or minhash.ngram < 1:
        raise DataError("--threshold must be in (0, 1], --num-perm and --ngram at least 1")
    ranks = ranks or runner.Ranks()
    out = Path(out_dir)
    shards = plan_shards(inputs, out)
    bands, rows = minhash.banding(verified=index == "lsh")
    settings = {"exact": exact, "near": near, "index": index, "text_key": text_key, "on_error": on_error,
                "minhash": {**asdict(minhash), "bands": bands, "rows": rows} if near else None}
    run_recipe = {"command": "dedup", "settings": settings, "inputs": [runner.input_id(s.path) for s in shards]}
    ranks.on_rank0(lambda: runner.prepare_out_dir(out, run_recipe, force))
    sig_key = json.dumps({"settings": settings}, sort_keys=True)
    mine = ranks.mine(shards)
    sign = [(s, str(out), sig_key, minhash, near, text_key, on_error) for s in mine]
    ranks.everywhere(lambda: runner.map_shards(_signatures_task, sign, workers))  # all signatures are on disk
    decisions = _decide(shards, out, minhash, exact, near, index, text_key, on_error, ranks)
    tasks = [(s, str(out), runner.shard_recipe(s, "dedup", settings, decisions=_digest(decisions.get(s.label, {}))),
              decisions.get(s.label, {}), text_key, on_error) for s in mine]
    gathered = [c for part in ranks.everywhere(lambda: runner.map_shards(_write_task, tasks, workers)) for c in part]
    return sorted(gathered, key=lambda c: [s.label for s in shards].index(c["shard"]))


def _sig_path(out: Path, shard: Shard) -> Path:
    return out / ".work" / f"{shard.label}.sig.npz"


def _signatures_task(shard: Shard, out_dir: str, key: str, minhash: MinHashSettings, near: bool,
                     text_key: str, on_error: str) -> int:
    path = _sig_path(Path(out_dir), shard)
    full_key = key + json.dumps(runner.input_id(shard.path))
    try:
        with np.load(path) as old:
            if str(old["key"]) == full_key:
                return int(old["words"].size)
    except (OSError, ValueError, KeyError):
        pass
    locations, texts = read_texts(shard.path, text_key, on_error)
    digests = np.frombuffer(b"".join(content_digest(t) for t in texts), np.uint8).reshape(len(texts), 16)
    counts = np.fromiter((count_words(t) for t in texts), np.int64, count=len(texts))
    sigs = np.zeros((len(texts), minhash.num_perm if near else 0), np.uint32)
    for lo in range(0, len(texts), BATCH) if near else ():
        sigs[lo:lo + BATCH] = signatures(texts[lo:lo + BATCH], minhash)
    buf = io.BytesIO()
    np.savez(buf, key=np.array(full_key), locations=np.asarray(locations, np.int64), words=counts,
             digests=digests, sigs=sigs)
    write_atomically(path, buf.getvalue())
    return len(texts)


@dataclass
class _Table:
    """Every document of the run, in input order (global index = offsets[shard] + number in shard)."""

    locations: np.ndarray
    words: np.ndarray
    digests: np.ndarray
    sigs: np.ndarray
    offsets: np.ndarray
    shard_of: np.ndarray


def _load_table(shards: list[Shard], out: Path, with_sigs: bool = True) -> _Table:
    names = ("locations", "words", "digests") + (("sigs",) if with_sigs else ())
    parts = []
    for s in shards:
        with np.load(_sig_path(out, s)) as z:
            parts.append({k: z[k] for k in names})
    sizes = np.array([p["words"].size for p in parts], np.int64)
    joined = {k: np.concatenate([p[k] for p in parts]) for k in names}
    joined.setdefault("sigs", np.zeros((0, 0), np.uint32))
    return _Table(**joined, offsets=np.concatenate(([0], np.cumsum(sizes))),
                  shard_of=np.repeat(np.arange(len(shards)), sizes))


def _load_sigs(out: Path, shard: Shard) -> np.ndarray:
    with np.load(_sig_path(out, shard)) as z:
        return z["sigs"]


def _decide(shards: list[Shard], out: Path, minhash: MinHashSettings, exact: bool, near: bool, index: str,
            text_key: str, on_error: str, ranks: runner.Ranks) -> dict[str, dict[int, list]]:
    """{shard label: {document number in shard: [rule, score, id of the kept duplicate]}}, on every rank.

    With the LSH index every rank finds and verifies the candidates of its share of the bands
    (band b on rank b % world_size) and rank 0 applies the keep rule to all verified edges; the
    Bloom index is sequential by nature and runs on rank 0.
    """
    split = near and index == "lsh"
    if not split:
        return ranks.on_rank0(lambda: _decisions(shards, out, minhash, exact, near, index, text_key, on_error))
    table = _load_table(shards, out)
    first = exact_duplicates(table.digests) if exact else np.arange(table.words.size)
    active = (first == np.arange(table.words.size)) & (table.words > 0)
    bands, _ = minhash.banding(verified=True)

    def shingles_of(idx: np.ndarray) -> dict[int, np.ndarray]:
        return _reread_shingles(idx, shards, table.offsets, table.shard_of, minhash.ngram, text_key, on_error)

    mine = [b for b in range(bands) if b % ranks.world_size == ranks.rank]
    found = ranks.gather(verified_edges(table.sigs, active, minhash, shingles_of, mine))
    edges = np.concatenate([e for e, _ in found])
    sims = np.concatenate([w for _, w in found])
    return ranks.on_rank0(lambda: _decisions(shards, out, minhash, exact, near, index, text_key, on_error,
                                             table=table, edges=(edges, sims)))


def _decisions(shards: list[Shard], out: Path, minhash: MinHashSettings, exact: bool, near: bool, index: str,
               text_key: str, on_error: str, table: _Table | None = None,
               edges: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, dict[int, list]]:
    table = table or _load_table(shards, out, with_sigs=index != "bloom")
    n = int(table.words.size)
    removed_by = np.full(n, "", dtype=object)
    keeper = np.full(n, -1, np.int64)
    score = np.full(n, np.nan)
    if exact and n:
        first = exact_duplicates(table.digests)
        dup = first != np.arange(n)
        removed_by[dup], keeper[dup], score[dup] = "exact", first[dup], 1.0
    if near and n:
        if edges is not None:
            k2, s2 = keep_first(n, *edges)
        elif index == "bloom":
            active = (keeper == -1) & (table.words > 0)
            blocks = ((_load_sigs(out, s), active[table.offsets[k]:table.offsets[k + 1]]) for k, s in enumerate(shards))
            k2 = np.where(bloom_duplicates(blocks, int(active.sum()), minhash), -2, -1)
            s2 = np.full(n, np.nan)
        else:
            active = (keeper == -1) & (table.words > 0)

            def shingles_of(idx: np.ndarray) -> dict[int, np.ndarray]:
                return _reread_shingles(idx, shards, table.offsets, table.shard_of, minhash.ngram, text_key, on_error)

            k2, s2 = near_duplicates(table.sigs, active, minhash, shingles_of, index)
        hit = k2 != -1
        removed_by[hit], keeper[hit], score[hit] = "near", k2[hit], s2[hit]
    decisions: dict[str, dict[int, list]] = {}
    for g in np.flatnonzero(removed_by != ""):
        k = int(table.shard_of[g])
        kept = int(keeper[g])
        kept_id = shards[table.shard_of[kept]].doc_id(int(table.locations[kept])) if kept >= 0 else None
        value = None if np.isnan(score[g]) else round(float(score[g]), 4)
        decisions.setdefault(shards[k].label, {})[int(g - table.offsets[k])] = [removed_by[g], value, kept_id]
    return decisions


def _reread_shingles(idx: np.ndarray, shards: list[Shard], offsets: np.ndarray, shard_of: np.ndarray,
                     ngram: int, text_key: str, on_error: str) -> dict[int, np.ndarray]:
    """N-gram hashes of the global documents `idx`, read back from their shards."""
    result: dict[int, np.ndarray] = {}
    for k in np.unique(shard_of[idx]):
        wanted = idx[shard_of[idx] == k]
        _, texts = read_texts(shards[k].path, text_key, on_error)
        local = wanted - offsets[k]
        shingles, per_doc = shingle_sets([texts[i] for i in local], ngram)
        ends = np.cumsum(per_doc)
        for g, end, count in zip(wanted, ends, per_doc):
            result[int(g)] = shingles[end - count:end]
    return result


def _digest(decisions: dict) -> str:
    return hashlib.sha256(json.dumps(sorted(decisions.items())).encode()).hexdigest()


def _write_task(shard: Shard, out_dir: str, recipe: dict, removals: dict[int, list], text_key: str,
                on_error: str) -> dict:
    out = Path(out_dir)
    done = runner.finished_shard(out, shard, recipe)
    if done is not None:
        return done
    counts = runner.new_counts(shard)
    errors = ReadErrors(on_error=on_error)
    with runner.shard_outputs(out, shard) as sink:
        for number, (loc, record, text) in enumerate(iter_documents(shard.path, text_key, errors)):
            n = count_words(text)
            counts["documents"] += 1
            counts["words_in"] += n
            if number in removals:
                rule, value, of = removals[number]
                sink.record({"id": shard.doc_id(loc), "rule": rule, "score": value, "action": "removed",
                             "words": n, "of": of})
                counts["removed"] += 1
                runner.count_rule(counts, rule, n)
                continue
            sink.keep(dumps_record(record))
            counts["kept"] += 1
            counts["words_kept"] += n
    counts["malformed"] = errors.count
    return runner.finish_shard(out, shard, recipe, sink, counts)
