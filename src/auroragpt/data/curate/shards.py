"""Shards of a curation run: one per input file, with stable names, document ids and outputs.

Every command reads its inputs with the readers `data tokenize` uses and writes, per shard,
`LABEL.jsonl` (kept documents, other fields preserved), `LABEL.ledger.jsonl` (one line per removed
or changed document: id, rule, score, words) and last `LABEL.recipe.json` (inputs, settings,
digests), which marks the shard finished; a rerun skips every shard whose recipe matches.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from auroragpt.data.readers import (
    ReadErrors,
    input_format,
    iter_line_chunks,
    iter_parquet_batches,
    list_input_files,
    parse_jsonl_records,
    read_txt,
    texts_from_values,
)
from auroragpt.errors import DataError


@dataclass(frozen=True)
class Shard:
    """One input file of the run: `label` names its outputs, `corpus` groups it in reports."""

    index: int
    path: str
    label: str
    corpus: str

    def output(self, out_dir: Path, suffix: str) -> Path:
        return out_dir / f"{self.label}{suffix}"

    def doc_id(self, location: int) -> str:
        return f"{self.label}:{location}"


def plan_shards(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None) -> list[Shard]:
    """The shards of `inputs` in a fixed order (folders expand sorted, as `data tokenize` does).

    Files inside `out_dir` are left out, so an output folder placed in an input folder is not
    read back as input by the next run.
    """
    files = list_input_files(inputs)
    if out_dir is not None:
        out = Path(out_dir).resolve()
        files = [f for f in files if out not in f.resolve().parents]
        if not files:
            raise DataError(f"no input files outside the output folder {out_dir}")
    stems = []
    for f in files:
        fmt = input_format(f) or ""
        stems.append(f.name[: -len(fmt) - 1] if f.name.endswith("." + fmt) else f.stem)
    unique = len(set(stems)) == len(stems)
    labels = stems if unique else [f"{k:05d}_{s}" for k, s in enumerate(stems)]
    return [Shard(k, str(f), labels[k], corpus_of(stems[k])) for k, f in enumerate(files)]


def corpus_of(stem: str) -> str:
    """The corpus a file belongs to: its name without a trailing shard number (`web_0003` -> `web`)."""
    return re.sub(r"[-_.]?\d+$", "", stem) or stem


def input_id(path: str) -> list:
    """What identifies an input for resuming: resolved path, size, modification time."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def iter_documents(path: str, text_key: str, errors: ReadErrors) -> Iterator[tuple[int, dict, str]]:
    """(line or row number, record, text) of every readable document of one input, in order."""
    fmt = input_format(path)
    p = Path(path)
    if fmt == "txt":
        for text in read_txt(p, errors):
            yield 1, {text_key: text}, text
    elif fmt == "parquet":
        for first, values in iter_parquet_batches(p, text_key):
            number = first
            for value in values:
                if texts_from_values([value], number, path, text_key, errors):
                    yield number, {text_key: value}, value
                number += 1
    elif fmt is not None:
        for first, chunk in iter_line_chunks(p):
            for number, record in parse_jsonl_records(chunk, first, path, text_key, errors):
                yield number, record, record[text_key]
    else:
        raise DataError(f"{path}: unsupported input format")


def read_texts(path: str, text_key: str, on_error: str = "skip") -> tuple[list[int], list[str]]:
    """(locations, texts) of one input, loaded whole (the dedup signature pass)."""
    errors = ReadErrors(on_error=on_error)
    locations, texts = [], []
    for loc, _, text in iter_documents(path, text_key, errors):
        locations.append(loc)
        texts.append(text)
    return locations, texts


def dumps_record(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
