"""Decontamination: remove every document sharing a word n-gram (13 by default) with evaluation data.

Evaluation files may be lm-eval style JSON lines (every string field of every record counts:
question, choices, answer...), JSON, or text; n-grams are over the same lower-cased words dedup uses.
The n-gram set is a sorted uint64 array, probed with `searchsorted` for a whole document at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from auroragpt.data.curate.normalize import ngram_hashes, word_hashes
from auroragpt.data.readers import iter_line_chunks
from auroragpt.errors import DataError

EVAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".txt")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def eval_texts(path: Path) -> Iterator[str]:
    """Every string of an evaluation file."""
    name = path.name
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found")
    if name.endswith(".txt"):
        yield path.read_text(encoding="utf-8", errors="replace")
    elif name.endswith(".json"):
        try:
            yield from _strings(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
    elif name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        for first, chunk in iter_line_chunks(path):
            for number, raw in enumerate(chunk.split(b"\n"), start=first):
                if not raw.strip():
                    continue
                try:
                    yield from _strings(json.loads(raw))
                except ValueError:
                    raise DataError(f"{path}:{number}: not a JSON line",
                                    hint="evaluation files must be JSON lines, JSON or .txt") from None
    else:
        raise DataError(f"{path}: unsupported evaluation file", hint=f"use one of {', '.join(EVAL_SUFFIXES)}")


def eval_ngrams(paths: Sequence[str | Path], n: int = 13) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(sorted unique n-gram hashes, index of the first file holding each, file names)."""
    hashes, owners = [], []
    for k, path in enumerate(paths):
        texts = list(eval_texts(Path(path)))
        wh, counts = word_hashes(texts)
        grams, _ = ngram_hashes(wh, counts, n, short=False)
        hashes.append(grams)
        owners.append(np.full(grams.size, k, np.int32))
    allh = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    allo = np.concatenate(owners) if owners else np.zeros(0, np.int32)
    uniq, first = np.unique(allh, return_index=True)
    if uniq.size == 0:
        raise DataError(f"no {n}-word n-gram in the evaluation files ({', '.join(map(str, paths))})",
                        hint="check the files, or lower --ngram")
    return uniq, allo[first], [Path(p).name for p in paths]


def contaminated(text: str, table: np.ndarray, owners: np.ndarray, names: list[str], n: int) -> tuple[str | None, list[dict]]:
    """The `decontaminate` process: remove the document when one of its n-grams is in `table`."""
    wh, counts = word_hashes([text])
    grams, _ = ngram_hashes(wh, counts, n, short=False)
    if grams.size == 0:
        return text, []
    pos = np.minimum(np.searchsorted(table, grams), table.size - 1)
    hits = table[pos] == grams
    if not hits.any():
        return text, []
    source = names[int(owners[pos[hits][0]])]
    return None, [{"rule": "decontaminate", "score": int(hits.sum()), "action": "removed", "of": source}]
