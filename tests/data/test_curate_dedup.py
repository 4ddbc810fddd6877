"""Acceptance tests of `data dedup` on a generated 50k-document corpus with injected exact copies and
near duplicates: exact dedup removes every copy and nothing else; near dedup against brute-force
Jaccard on a 2k subset; identical outputs for 1 vs 2 workers, 2 launcher ranks, and SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from curate_corpus import make_corpus, output_digest, read_kept, write_shards  # noqa: E402

from auroragpt.data.curate.dedup import dedup  # noqa: E402
from auroragpt.data.curate.minhash import MinHashSettings  # noqa: E402

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "auroragpt"), *args], capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    corpus = make_corpus(50_000, seed=1)
    folder = tmp_path_factory.mktemp("corpus50k")
    write_shards(corpus.texts, folder / "in", 8)
    return corpus, folder


def _ledger(out: Path) -> dict[int, dict]:
    """{corpus index n: ledger entry} with `of` turned into the kept document's n."""
    ids = {}
    for path in sorted(out.glob("*.jsonl")):
        if not path.name.endswith(".ledger.jsonl"):
            label = path.name[: -len(".jsonl")]
            source = json.loads((out / f"{label}.recipe.json").read_text())["input"][0]
            for line_no, line in enumerate(Path(source).read_text().splitlines(), start=1):
                ids[f"{label}:{line_no}"] = json.loads(line)["n"]
    entries = {}
    for path in sorted(out.glob("*.ledger.jsonl")):
        for line in path.read_text().splitlines():
            e = json.loads(line)
            entries[ids[e["id"]]] = {**e, "of": ids.get(e["of"])}
    return entries


def test_exact_dedup_removes_every_copy_and_nothing_else(big, tmp_path):
    corpus, folder = big
    counts = dedup([str(folder / "in")], tmp_path / "out", exact=True, near=False)
    assert sum(c["documents"] for c in counts) == 50_000
    ledger = _ledger(tmp_path / "out")
    assert set(ledger) == set(corpus.copy_of), "removed documents differ from the injected copies"
    assert all(ledger[i]["of"] == corpus.copy_of[i] and ledger[i]["rule"] == "exact" for i in ledger)
    kept = read_kept(tmp_path / "out")
    assert kept == [i for i in range(50_000) if i not in corpus.copy_of]


def _shingles(text: str, n: int = 3) -> set:
    w = text.lower().split()
    return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}


def _brute_force_pairs(texts: list[str], threshold: float, n: int) -> dict[tuple[int, int], float]:
    """Every pair with Jaccard >= threshold, exactly (sparse incidence matrix products)."""
    from scipy.sparse import csr_matrix

    vocab: dict = {}
    rows, cols = [], []
    for r, t in enumerate(texts):
        for s in _shingles(t, n):
            rows.append(r)
            cols.append(vocab.setdefault(s, len(vocab)))
    m = csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), len(vocab)))
    inter = (m @ m.T).tocoo()
    sizes = np.asarray(m.sum(axis=1)).ravel()
    out = {}
    for a, b, v in zip(inter.row, inter.col, inter.data):
        if a < b:
            j = v / (sizes[a] + sizes[b] - v)
            if j >= threshold:
                out[(int(a), int(b))] = float(j)
    return out


@pytest.mark.parametrize("ngram", [3, 2])  # the default shingle, and one that puts more pairs near 0.8
def test_near_dedup_recall_and_precision_against_brute_force(big, tmp_path, ngram):
    corpus, folder = big
    settings = MinHashSettings(threshold=0.8, ngram=ngram)
    dedup([str(folder / "in")], tmp_path / "out", exact=True, near=True, minhash=settings)
    ledger = _ledger(tmp_path / "out")
    # a 2k subset rich in near duplicates: 800 of them, their originals, random others (no exact copies)
    rng = np.random.default_rng(7)
    nears = rng.choice(sorted(corpus.near_of), size=800, replace=False)
    chosen = set(int(i) for i in nears) | {corpus.near_of[int(i)] for i in nears}
    others = [i for i in rng.permutation(50_000) if i not in corpus.copy_of and i not in chosen]
    subset = sorted(chosen | set(int(i) for i in others[: 2000 - len(chosen)]))
    assert len(subset) == 2000
    truth = {(subset[a], subset[b]) for (a, b) in _brute_force_pairs([corpus.texts[i] for i in subset], 0.8, ngram)}
    assert len(truth) > 100, "the subset must hold enough true pairs to measure recall"

    parent = list(range(50_000))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, e in ledger.items():
        parent[find(i)] = find(e["of"])
    recall = sum(find(a) == find(b) for a, b in truth) / len(truth)
    inside = set(subset)
    predicted = [(min(i, e["of"]), max(i, e["of"])) for i, e in ledger.items()
                 if e["rule"] == "near" and i in inside and e["of"] in inside]
    exact_j = {p: _jaccard(corpus.texts[p[0]], corpus.texts[p[1]], ngram) for p in predicted}
    precision = sum(j >= 0.8 for j in exact_j.values()) / max(len(predicted), 1)
    print(f"near dedup (ngram {ngram}) on the 2k subset: {len(truth)} true pairs, recall {recall:.4f}, "
          f"{len(predicted)} predicted pairs, precision {precision:.4f}")
    assert len(predicted) > 80
    assert recall >= 0.9
    assert precision >= 0.99
    assert all(abs(ledger[max(p)]["score"] - round(j, 4)) < 1e-3 for p, j in exact_j.items())


def _jaccard(x: str, y: str, n: int = 3) -> float:
    a, b = _shingles(x, n), _shingles(y, n)
    return len(a & b) / len(a | b)


def test_bloom_index_finds_near_duplicates(tmp_path):
    corpus = make_corpus(4000, seed=3)
    write_shards(corpus.texts, tmp_path / "in", 2)
    dedup([str(tmp_path / "in")], tmp_path / "out", exact=True, near=True, index="bloom")
    removed = set(range(4000)) - set(read_kept(tmp_path / "out"))
    assert set(corpus.copy_of) <= removed
    close = [i for i, j in corpus.near_of.items() if _jaccard(corpus.texts[i], corpus.texts[j]) >= 0.9]
    assert sum(i in removed for i in close) >= 0.9 * len(close)
    assert len(removed - set(corpus.copy_of) - set(corpus.near_of)) <= 2  # Bloom false positives are rare


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    corpus = make_corpus(6000, seed=2)
    folder = tmp_path_factory.mktemp("corpus6k")
    write_shards(corpus.texts, folder / "in", 12)
    reference = folder / "ref"
    result = cli("data", "dedup", str(folder / "in"), "--out", str(reference), "--exact", "--near")
    assert result.returncode == 0, result.stderr
    return folder, output_digest(reference)


def test_two_workers_write_the_same_bytes(small):
    folder, digest = small
    result = cli("data", "dedup", str(folder / "in"), "--out", str(folder / "w2"), "--exact", "--near", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert output_digest(folder / "w2") == digest


def test_two_launcher_ranks_write_the_same_bytes(small):
    folder, digest = small
    result = cli("launch", "-n", "2", "--", str(BIN / "auroragpt"), "data", "dedup", str(folder / "in"),
                 "--out", str(folder / "r2"), "--exact", "--near", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(ranks 2, workers 1)" in result.stdout
    assert output_digest(folder / "r2") == digest


def _run_until(args: list[str], ready, timeout: float = 120) -> bool:
    """Start the CLI, SIGKILL its process group once `ready()` holds; False when it finished first."""
    proc = subprocess.Popen([str(BIN / "auroragpt"), *args], env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the run neither reached the kill point nor finished")


def test_sigkill_and_resume_write_the_same_bytes(small):
    folder, digest = small
    out = folder / "killed"
    args = ["data", "dedup", str(folder / "in"), "--out", str(out), "--exact", "--near"]
    # killed while signing shards, then while writing them; each rerun goes on from there
    assert _run_until(args, lambda: len(list(out.glob(".work/*.sig.npz"))) >= 2)
    assert len(list(out.glob(".work/*.sig.npz"))) < 12 and not list(out.glob("*.recipe.json"))
    assert _run_until(args, lambda: len(list(out.glob("*.recipe.json"))) >= 2)
    assert len(list(out.glob("*.recipe.json"))) < 12, "the run finished before it could be killed"
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert output_digest(out) == digest
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".work/*.tmp*"))


def test_a_bad_shard_on_one_rank_stops_every_rank_with_one_paragraph(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "a fine document"}\n')
    (tmp_path / "in" / "b.jsonl").write_text('{"text": "fine"}\n{"nope": 1}\n')  # shard 1: rank 1's
    result = cli("launch", "-n", "2", "--", str(BIN / "auroragpt"), "data", "dedup", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"), "--on-error", "fail", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert "[rank 1] auroragpt data: error: malformed input at" in text and "b.jsonl:2" in text
    assert "[rank 0] auroragpt data: error: on rank 1: malformed input" in text
    assert not list((tmp_path / "out").glob("*.recipe.json"))
