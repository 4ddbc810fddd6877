"""A generated corpus for the curation tests (uniquely named module; tests/data has a conftest).

Random documents over a Zipf-distributed synthetic vocabulary, plus injected exact copies (some
re-cased or re-spaced, which normalisation treats as copies) and near duplicates with 3-10% of
their words substituted, deleted or inserted. Built with numpy in well under a second for 50k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Corpus:
    texts: list[str]
    copy_of: dict[int, int] = field(default_factory=dict)  # exact copy -> its original
    near_of: dict[int, int] = field(default_factory=dict)  # near duplicate -> its original


def make_corpus(n: int = 50_000, seed: int = 0, copies: float = 0.03, near: float = 0.05,
                words: tuple[int, int] = (60, 140)) -> Corpus:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    codes = rng.integers(0, 26, size=(30_000, 9))
    cut = rng.integers(2, 10, size=30_000)
    vocab = np.unique(np.array(["".join(letters[c[:k]]) for c, k in zip(codes, cut)]))
    vocab = vocab[rng.permutation(vocab.size)]  # frequency rank unrelated to spelling
    names = vocab.tolist()
    ranks = np.arange(1, vocab.size + 1)
    p = 1.0 / ranks ** 0.9
    p /= p.sum()
    lengths = rng.integers(words[0], words[1], size=n)
    all_ids = rng.choice(vocab.size, size=int(lengths.sum()), p=p)
    docs = np.split(all_ids, np.cumsum(lengths)[:-1])
    kind = rng.random(n)
    spare = iter(rng.choice(vocab.size, size=20 * n, p=p).tolist())  # words for insertions/substitutions
    corpus = Corpus(texts=[""] * n)
    for i in range(n):
        if i > 10 and kind[i] < copies:
            j = int(rng.integers(0, i))
            while j in corpus.copy_of or j in corpus.near_of:
                j = int(rng.integers(0, i))
            text = corpus.texts[j]
            style = rng.integers(0, 3)
            corpus.texts[i] = text if style == 0 else (text.upper() if style == 1 else "  " + text.replace(" ", "\n "))
            corpus.copy_of[i] = j
            continue
        if i > 10 and kind[i] < copies + near:
            j = int(rng.integers(0, i))
            while j in corpus.copy_of or j in corpus.near_of:
                j = int(rng.integers(0, i))
            ids = list(docs[j])
            edits = max(1, int(round(len(ids) * rng.uniform(0.03, 0.10))))
            for _ in range(edits):
                op, at = rng.integers(0, 3), int(rng.integers(0, len(ids)))
                new = next(spare)
                if op == 0:
                    ids[at] = new
                elif op == 1 and len(ids) > 5:
                    del ids[at]
                else:
                    ids.insert(at, new)
            docs[i] = np.array(ids)
            corpus.near_of[i] = j
        corpus.texts[i] = " ".join([names[w] for w in docs[i].tolist()])
    return corpus


def write_shards(texts: list[str], folder: Path, shards: int, name: str = "web") -> list[Path]:
    """Contiguous slices of `texts` as NAME_KK.jsonl (document order = input order)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, part in enumerate(np.array_split(np.arange(len(texts)), shards)):
        path = folder / f"{name}_{k:02d}.jsonl"
        path.write_text("".join(json.dumps({"text": texts[i], "n": int(i)}) + "\n" for i in part))
        paths.append(path)
    return paths


def read_kept(folder: Path) -> list[int]:
    """The `n` of every kept document of a curation output folder, in order."""
    kept = []
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.endswith(".ledger.jsonl"):
            continue
        kept += [json.loads(line)["n"] for line in path.read_text().splitlines()]
    return kept


def output_digest(folder: Path) -> str:
    """sha256 over every output file (documents, ledgers, recipes) in name order."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith((".jsonl", ".recipe.json", "curation.json")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
