"""Near-dedup throughput and memory: auroragpt's MinHash + LSH against datasketch's MinHashLSH.

Same corpus (tests/data/curate_corpus.py: Zipf words, injected copies and 3-10% edits), same
settings (word 3-gram shingles, 128 permutations, threshold 0.8, the same bands x rows). Each side
runs in its own single-threaded subprocess, from texts to the set of removed documents, so its
time is documents/s on one core and its peak RSS above the loaded texts is its own.

    python bench/curate.py --docs 20000
    python bench/curate.py --docs 200000 --pipeline   # also time `data dedup` on sharded files
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "data"))


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(texts: list[str], args: argparse.Namespace) -> set[int]:
    import numpy as np

    from auroragpt.data.curate.minhash import MinHashSettings
    from auroragpt.data.curate.near import dedup_texts

    settings = MinHashSettings(num_perm=args.num_perm, ngram=args.ngram, threshold=args.threshold,
                               bands=args.bands, rows=args.rows)
    keeper, _ = dedup_texts(texts, settings)
    return set(np.flatnonzero(keeper != -1).tolist())


def _datasketch(texts: list[str], args: argparse.Namespace) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm, params=(args.bands, args.rows))
    word = re.compile(r"\w+")
    n = args.ngram
    removed = set()
    for i, text in enumerate(texts):
        w = word.findall(text.lower())
        shingles = {" ".join(w[j:j + n]).encode() for j in range(max(len(w) - n + 1, 1))}
        m = MinHash(num_perm=args.num_perm)
        m.update_batch(shingles)
        if lsh.query(m):
            removed.add(i)  # a duplicate of something already kept (query-then-insert, as LSHBloom does)
        else:
            lsh.insert(i, m)
    return removed


def worker(args: argparse.Namespace) -> None:
    texts = [json.loads(line)["text"] for line in open(args.corpus, encoding="utf-8")][: args.docs]
    (_ours if args.worker == "ours" else _datasketch)(texts[:50], args)  # imports and warm-up outside the count
    base = _rss_mib()
    started = time.perf_counter()
    removed = (_ours if args.worker == "ours" else _datasketch)(texts, args)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_above_texts_mib": max(peak - base, 0.0), "removed": sorted(removed)}))


def _run(side: str, corpus: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--corpus", str(corpus), "--docs", str(args.docs),
           "--ngram", str(args.ngram), "--num-perm", str(args.num_perm), "--threshold", str(args.threshold),
           "--bands", str(args.bands), "--rows", str(args.rows)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(["taskset", "-c", "0", *cmd] if _has_taskset() else cmd, capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bloom_bytes(args: argparse.Namespace) -> float:
    from auroragpt.data.curate.minhash import BloomBands, MinHashSettings

    bands, _ = MinHashSettings(num_perm=args.num_perm, threshold=args.threshold).banding(verified=False)
    return BloomBands(bands, 1_000_000).nbytes / 1_000_000


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None


def _pipeline(folder: Path, docs: int, args: argparse.Namespace) -> float:
    """Seconds of `auroragpt data dedup --exact --near` (one worker) on the corpus as 8 shards."""
    from curate_corpus import write_shards

    texts = [json.loads(line)["text"] for line in open(folder / "corpus.jsonl", encoding="utf-8")]
    write_shards(texts, folder / "shards", 8)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "auroragpt"), "data", "dedup", str(folder / "shards"),
                    "--out", str(folder / "out"), "--exact", "--near", "--ngram", str(args.ngram)],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--ngram", type=int, default=3)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--bands", type=int, default=0)
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--pipeline", action="store_true", help="also time `data dedup` end to end on sharded files")
    p.add_argument("--worker", choices=("ours", "datasketch"), help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from auroragpt.data.curate.minhash import MinHashSettings
    from curate_corpus import make_corpus

    if not (args.bands and args.rows):
        args.bands, args.rows = MinHashSettings(num_perm=args.num_perm, threshold=args.threshold).banding()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = make_corpus(args.docs, seed=0)
        with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
            for t in corpus.texts:
                f.write(json.dumps({"text": t}) + "\n")
        ours = _run("ours", folder / "corpus.jsonl", args)
        theirs = _run("datasketch", folder / "corpus.jsonl", args)
        # memory per document: the slope between the full corpus and its first half (fixed costs cancel)
        half = argparse.Namespace(**{**vars(args), "docs": args.docs // 2})
        per_m = {side: (full["peak_above_texts_mib"] - _run(side, folder / "corpus.jsonl", half)["peak_above_texts_mib"])
                 / (args.docs - half.docs) * 1e6 / 1024 for side, full in (("ours", ours), ("datasketch", theirs))}
        pipeline = _pipeline(folder, args.docs, args) if args.pipeline else None
    n = args.docs
    a, b = set(ours["removed"]), set(theirs["removed"])
    rate_ours, rate_theirs = n / ours["seconds"], n / theirs["seconds"]
    print(f"corpus: {n:,} documents ({len(corpus.copy_of):,} exact copies, {len(corpus.near_of):,} near copies); "
          f"{args.ngram}-word shingles, {args.num_perm} permutations, threshold {args.threshold}, "
          f"{args.bands} bands x {args.rows} rows; one core each")
    print(f"auroragpt : {rate_ours:10,.0f} docs/s per core, removed {len(a):,} "
          f"(verified Jaccard), peak memory above texts {ours['peak_above_texts_mib']:.0f} MiB, "
          f"{per_m['ours']:.2f} GiB per million documents")
    print(f"datasketch: {rate_theirs:10,.0f} docs/s per core, removed {len(b):,} "
          f"(unverified LSH hits), peak memory above texts {theirs['peak_above_texts_mib']:.0f} MiB, "
          f"{per_m['datasketch']:.2f} GiB per million documents")
    sig = args.num_perm * 4 + args.bands * 8
    print(f"auroragpt index arrays: {sig} B per document (signature + band keys) = {sig / 1.024 ** 3 / 1e3:.2f} GiB "
          f"per million; the Bloom index (--index bloom) keeps ~{_bloom_bytes(args):.0f} B per document instead of "
          f"the band keys")
    print(f"agreement: {len(a & b):,} removed by both, {len(a - b):,} only by auroragpt, {len(b - a):,} only by datasketch")
    if pipeline is not None:
        print(f"pipeline: `data dedup --exact --near` on 8 shards, 1 worker: {n / pipeline:,.0f} docs/s "
              f"({pipeline:.1f} s, process start and file I/O included)")
    print(f"ratio: {rate_ours / rate_theirs:.1f}x documents/s per core (goal >= 3x)")


if __name__ == "__main__":
    main()
