"""The data-file-list: which indexed datasets to train on, with what weight, in which corpus.

Two forms are accepted:

* the text form ALCF's Megatron-DeepSpeed uses, one `WEIGHT PREFIX CORPUS` per line (`#` comments
  and blank lines allowed, `PREFIX` with or without `.bin`/`.idx`); a file's weight is its share of
  the whole mix and a corpus's weight the sum of its files' weights;
* a TOML or YAML file listing corpora, each with a `weight` and `files` (paths or globs); files
  within a corpus then share its weight in proportion to their token counts::

      [[corpus]]                # YAML: corpus: [{name: web, weight: 0.7, files: [...]}]
      name = "web"
      weight = 0.7
      files = ["web/*.bin"]

Relative paths are taken from the list's own folder (then from the working directory). Only each
file's 34-byte `.idx` header and the `.bin` size are read, so checking 2,419 files costs a fraction
of a second. Every problem is reported at once, with file and line, before anything starts.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auroragpt.data.indexed import dataset_paths, read_index_header, split_prefix, token_extent_bytes
from auroragpt.errors import DataError


@dataclass(frozen=True)
class FileEntry:
    """One dataset of the list: `weight` is normalised (all entries sum to 1)."""

    weight: float
    prefix: str
    corpus: str
    num_tokens: int
    num_sequences: int
    num_documents: int
    dtype: np.dtype
    source: str  # "list.txt:12", where the entry came from


@dataclass(frozen=True)
class FileList:
    """A validated data-file-list: entries in list order (the order is part of the plan's identity)."""

    path: str
    entries: tuple[FileEntry, ...]

    @property
    def corpora(self) -> list[str]:
        """Corpus names in order of first appearance."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            seen.setdefault(entry.corpus, None)
        return list(seen)

    def corpus_weights(self) -> dict[str, float]:
        weights: dict[str, float] = {name: 0.0 for name in self.corpora}
        for entry in self.entries:
            weights[entry.corpus] += entry.weight
        return weights

    @property
    def num_tokens(self) -> int:
        return sum(entry.num_tokens for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class _RawEntry:
    weight: float | None  # None: share the corpus weight by token count
    prefix: str
    corpus: str
    source: str
    corpus_weight: float | None = None


def parse_file_list(path: str | os.PathLike) -> FileList:
    """Parse and validate a data-file-list; raise one DataError listing every problem found."""
    list_path = Path(path)
    try:
        text = list_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{list_path}: data-file-list not found", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{list_path}: cannot read the data-file-list: {err}") from None
    suffix = list_path.suffix.lower()
    problems: list[str] = []
    if suffix == ".toml":
        raw = _parse_structured(list_path, _load_toml(list_path, text), problems)
    elif suffix in (".yaml", ".yml"):
        raw = _parse_structured(list_path, _load_yaml(list_path, text), problems)
    else:
        raw = _parse_text(list_path, text, problems)
    entries = _validate(list_path, raw, problems)
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(
            f"{list_path}: {len(problems)} problem(s) in the data-file-list:\n  " + "\n  ".join(shown) + more,
            hint="fix the lines named above; nothing is trained until the whole list is valid",
        )
    return FileList(str(list_path), tuple(entries))


# -- the text form ---------------------------------------------------------------------------------
def _parse_text(list_path: Path, text: str, problems: list[str]) -> list[_RawEntry]:
    raw: list[_RawEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        where = f"{list_path}:{number}"
        fields = content.split()
        if len(fields) not in (2, 3):
            problems.append(
                f"{where}: expected `WEIGHT PREFIX CORPUS`, got {len(fields)} field(s): {content[:80]!r}"
            )
            continue
        try:
            weight = float(fields[0])
        except ValueError:
            problems.append(f"{where}: weight {fields[0]!r} is not a number (line: {content[:80]!r})")
            continue
        corpus = fields[2] if len(fields) == 3 else Path(split_prefix(fields[1])).name
        raw.append(_RawEntry(weight, fields[1], corpus, where))
    if not raw and not problems:
        problems.append(f"{list_path}: the list has no entries")
    return raw


# -- the TOML / YAML form --------------------------------------------------------------------------
def _load_toml(list_path: Path, text: str) -> object:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"{list_path}: not valid TOML: {err}") from None


def _load_yaml(list_path: Path, text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataError(f"{list_path}: not valid YAML: {err}") from None


def _parse_structured(list_path: Path, data: object, problems: list[str]) -> list[_RawEntry]:
    corpora = None
    if isinstance(data, dict):
        corpora = data.get("corpus", data.get("corpora"))
    elif isinstance(data, list):
        corpora = data
    if not isinstance(corpora, list) or not corpora:
        raise DataError(
            f"{list_path}: expected a list of corpora under `corpus` (TOML: [[corpus]] tables)",
            hint="each corpus needs `name`, `weight` and `files` (paths or globs)",
        )
    raw: list[_RawEntry] = []
    for number, corpus in enumerate(corpora, start=1):
        where = f"{list_path}: corpus #{number}"
        if not isinstance(corpus, dict):
            problems.append(f"{where}: expected a table with name, weight and files, got {corpus!r:.80}")
            continue
        unknown = sorted(set(corpus) - {"name", "weight", "files"})
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (known: name, weight, files)")
        name = corpus.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: `name` must be a non-empty string")
            continue
        where = f"{list_path}: corpus {name!r}"
        weight = corpus.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(f"{where}: `weight` must be a number, got {weight!r}")
            continue
        files = corpus.get("files")
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            problems.append(f"{where}: `files` must be a non-empty list of paths or globs")
            continue
        prefixes: list[str] = []
        for pattern in files:
            matches = _expand(list_path, pattern)
            if not matches:
                problems.append(f"{where}: {pattern!r} matches no .bin/.idx files")
            prefixes.extend(m for m in matches if m not in prefixes)
        for prefix in prefixes:
            raw.append(_RawEntry(None, prefix, name, where, corpus_weight=float(weight)))
    return raw


def _expand(list_path: Path, pattern: str) -> list[str]:
    """Dataset prefixes a path or glob names, sorted (never in directory order)."""
    if not glob.has_magic(pattern):
        return [pattern]
    found: list[str] = []
    for base in _bases(list_path, pattern):
        hits = glob.glob(str(base), recursive=True)
        prefixes = sorted({split_prefix(h) for h in hits if h.endswith((".bin", ".idx"))})
        if prefixes:
            found = prefixes
            break
    return found


def _bases(list_path: Path, name: str) -> list[Path]:
    candidate = Path(os.path.expanduser(name))
    if candidate.is_absolute():
        return [candidate]
    return [list_path.parent / candidate, Path.cwd() / candidate]


def _resolve(list_path: Path, prefix: str) -> str | None:
    for base in _bases(list_path, split_prefix(prefix)):
        idx_path, bin_path = dataset_paths(base)
        if idx_path.exists() or bin_path.exists():
            return os.path.abspath(split_prefix(base))
    return None


# -- validation ------------------------------------------------------------------------------------
def _validate(list_path: Path, raw: list[_RawEntry], problems: list[str]) -> list[FileEntry]:
    seen: dict[str, str] = {}
    measured: list[tuple[_RawEntry, str, int, tuple[int, int], np.dtype]] = []
    for item in raw:
        if item.weight is not None and not (math.isfinite(item.weight) and item.weight > 0):
            problems.append(f"{item.source}: weight {item.weight!r} must be a finite number > 0")
            continue
        if item.corpus_weight is not None and not (math.isfinite(item.corpus_weight) and item.corpus_weight > 0):
            problems.append(f"{item.source}: weight {item.corpus_weight!r} must be a finite number > 0")
            continue
        prefix = _resolve(list_path, item.prefix)
        if prefix is None:
            problems.append(f"{item.source}: dataset {item.prefix!r} not found (no .bin/.idx there)")
            continue
        if prefix in seen:
            problems.append(f"{item.source}: duplicate dataset {item.prefix!r} (already listed at {seen[prefix]})")
            continue
        seen[prefix] = item.source
        idx_path, bin_path = dataset_paths(prefix)
        if not idx_path.is_file() or not bin_path.is_file():
            missing = idx_path if not idx_path.is_file() else bin_path
            problems.append(f"{item.source}: {missing} is missing (a dataset needs both .bin and .idx)")
            continue
        try:
            header = read_index_header(prefix)
            extent = token_extent_bytes(prefix, header)
        except DataError as err:
            problems.append(f"{item.source}: {err.message}")
            continue
        bin_size = bin_path.stat().st_size
        if bin_size % header.dtype.itemsize:
            problems.append(f"{item.source}: {bin_path} size {bin_size} is not a multiple of the token size")
            continue
        if extent > bin_size:
            problems.append(f"{item.source}: {bin_path} holds {bin_size:,} bytes but its index ends the last "
                            f"sequence at byte {extent:,} (a truncated .bin; re-create or re-copy it)")
            continue
        num_tokens = extent // header.dtype.itemsize
        if (num_tokens == 0 or header.num_sequences == 0) and item.weight is not None:
            problems.append(f"{item.source}: weight {item.weight} given for the empty dataset {item.prefix!r}")
            continue
        counts = (header.num_sequences, header.num_documents)
        measured.append((item, prefix, num_tokens, counts, header.dtype))
    return _normalise(measured, problems)


def _normalise(
    measured: list[tuple[_RawEntry, str, int, tuple[int, int], np.dtype]], problems: list[str]
) -> list[FileEntry]:
    """Turn raw weights into shares of the whole mix that sum to 1."""
    weights: list[float] = []
    corpus_tokens: dict[str, int] = {}
    for item, _, tokens, _, _ in measured:
        if item.weight is None:
            corpus_tokens[item.corpus] = corpus_tokens.get(item.corpus, 0) + tokens
    for item, _, tokens, _, _ in measured:
        if item.weight is not None:
            weights.append(item.weight)
        elif corpus_tokens[item.corpus] == 0:
            problems.append(f"{item.source}: every file of corpus {item.corpus!r} is empty, yet it has a weight")
            weights.append(0.0)
        else:
            weights.append(item.corpus_weight * tokens / corpus_tokens[item.corpus])
    # Scaled by the largest weight first: weights near the float maximum would overflow the sum.
    largest = max(weights, default=0.0)
    weights = [w / largest for w in weights] if largest > 0 else weights
    total = math.fsum(weights)
    if not measured or total <= 0:
        return []
    entries = []
    for (item, prefix, tokens, (sequences, documents), dtype), weight in zip(measured, weights):
        if weight > 0:
            entries.append(
                FileEntry(weight / total, prefix, item.corpus, tokens, sequences, documents, dtype, item.source)
            )
    return entries
