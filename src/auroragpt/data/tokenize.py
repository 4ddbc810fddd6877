"""Parallel tokenization of corpus files into indexed datasets.

The main process cuts every input into chunks (whole JSON lines, parquet row batches, one .txt
file) and hands them to worker processes, which parse, tokenize with `encode_documents` and send
back numpy arrays. Results are consumed in submission order, so the output does not depend on the
number of workers. Each input first becomes a finished dataset of its own in `PREFIX.parts/`
(written atomically), so a run that is killed and started again redoes only unfinished inputs;
the parts are then merged (and shuffled, with `shuffle_seed`) or renamed into their final names.

A recipe (inputs with size and modification time, tokenizer digest, text key, seed) is kept in
`PREFIX.parts/recipe.json` and beside each output as `PREFIX.recipe.json`. Finished work is reused
only when its recipe is the one asked for now; an output made otherwise is replaced only with
`force`, never silently kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from auroragpt.atomic import remove_orphaned_temporaries, write_atomically
from auroragpt.jsonio import read_json
from auroragpt.data.indexed import (
    IndexedDataset,
    IndexedDatasetWriter,
    dataset_exists,
    dataset_paths,
    dtype_for_vocab,
    split_prefix,
)
from auroragpt.data.merge import merge_datasets
from auroragpt.data.ordered_pool import OrderedPool, WorkerDiedError
from auroragpt.data.readers import (
    ReadErrors,
    input_format,
    iter_line_chunks,
    iter_parquet_batches,
    iter_parquet_records,
    list_input_files,
    parse_jsonl_chunk,
    parse_jsonl_objects,
    read_txt,
    texts_from_values,
)
from auroragpt.data.tokenizer import load_tokenizer
from auroragpt.errors import DataError
from auroragpt.log import get_logger

log = get_logger(__name__)

DEFAULT_CHUNK_BYTES = 1 << 20


@dataclass
class TokenizeResult:
    """What a run produced: final dataset prefixes and totals of the work done in this run."""

    outputs: list[str]
    documents: int = 0
    tokens: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    reused: list[str] = field(default_factory=list)  # inputs whose outputs an earlier run finished
    errors: ReadErrors = field(default_factory=ReadErrors)


# -- worker side ----------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(tokenizer_path: str, text_key: str, on_error: str, dtype: str, single_thread: bool = True,
                 fmt: str = "text", chat_template: str = "default") -> None:
    if single_thread:  # one thread per worker process: parallelism comes from the processes
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    tokenizer = load_tokenizer(tokenizer_path)
    template = None
    if fmt != "text":
        from auroragpt.data.chat_template import load_chat_template

        template = load_chat_template(chat_template, tokenizer)
    _WORKER.update(tokenizer=tokenizer, text_key=text_key, on_error=on_error, dtype=np.dtype(dtype),
                   fmt=fmt, template=template)


def _tokenize_task(item: tuple[int, tuple | None]) -> tuple[int, tuple | None]:
    """Parse and tokenize one chunk of input `k`: (k, (tokens, lengths, bytes read, malformed
    count, locations)), or (k, None) for the marker that input `k` is complete."""
    k, task = item
    if task is None:
        return k, None
    kind, file, first, payload = task
    errors = ReadErrors(on_error=_WORKER["on_error"])
    key = _WORKER["text_key"]
    if _WORKER["fmt"] != "text":
        return k, _encode_records_task(kind, file, first, payload, errors)
    if kind == "jsonl":
        texts = parse_jsonl_chunk(payload, first, file, key, errors)
        nbytes = len(payload)
    elif kind == "values":
        texts = texts_from_values(payload, first, file, key, errors)
        nbytes = sum(len(t) for t in texts)
    else:  # "txt"
        texts = read_txt(Path(file), errors)
        nbytes = sum(len(t) for t in texts)
    tokens, lengths = _WORKER["tokenizer"].encode_documents(texts, dtype=_WORKER["dtype"])
    return k, (tokens, lengths, nbytes, errors.count, errors.locations, None)


def _encode_records_task(kind: str, file: str, first: int, payload, errors: ReadErrors) -> tuple:
    """Chat, completion or preference records: tokens, sequence lengths and the loss mask."""
    from auroragpt.data.conversations import encode_records

    if kind == "jsonl":
        records, nbytes = parse_jsonl_objects(payload, first, file, errors), len(payload)
    else:  # parquet rows
        records, nbytes = list(enumerate(payload, start=first)), 0
    tokens, lengths, mask = encode_records(records, file, _WORKER["fmt"], _WORKER["template"], _WORKER["tokenizer"],
                                           _WORKER["dtype"])
    return tokens, lengths, nbytes, errors.count, errors.locations, mask


def _tasks_of(file: Path, chunk_bytes: int, text_key: str, records: bool = False) -> Iterator[tuple]:
    fmt = input_format(file)
    if fmt == "txt" and records:
        raise DataError(f"{file}: a .txt file holds no chat, completion or preference records",
                        hint="give .jsonl or .parquet files for --format chat|completion|preference")
    if fmt == "txt":
        yield ("txt", str(file), 1, None)
    elif fmt == "parquet" and records:
        for first, rows in iter_parquet_records(file, max(64, chunk_bytes // 2048)):
            yield ("rows", str(file), first, rows)
    elif fmt == "parquet":
        rows = max(64, chunk_bytes // 2048)
        for first, values in iter_parquet_batches(file, text_key, rows):
            yield ("values", str(file), first, values)
    else:
        for first, chunk in iter_line_chunks(file, chunk_bytes):
            yield ("jsonl", str(file), first, chunk)


# -- main side ------------------------------------------------------------------------------------
def _output_names(files: Sequence[Path], output_prefix: str, per_input: bool) -> tuple[list[str], list[str]]:
    """(part prefix, final prefix) of every input; for a merged run every final is the one prefix."""
    stems = []
    for f in files:
        name = f.name
        fmt = input_format(f) or ""
        stems.append(name[: -len(fmt) - 1] if fmt and name.endswith("." + fmt) else f.stem)
    unique = len(set(stems)) == len(stems)
    labels = stems if unique else [f"{k:05d}_{s}" for k, s in enumerate(stems)]
    parts_dir = output_prefix + ".parts"
    parts = [f"{parts_dir}/{k:05d}_{s}" for k, s in enumerate(stems)]
    finals = [f"{output_prefix}_{label}" if per_input else output_prefix for label in labels]
    return parts, finals


def _finished(prefix: str, with_mask: bool = False) -> bool:
    """A dataset that an earlier run completed: both files present and the index consistent
    (and, with `with_mask`, its loss-mask sidecar too)."""
    from auroragpt.data.conversations import mask_prefix

    for name in (prefix, mask_prefix(prefix)) if with_mask else (prefix,):
        if not dataset_exists(name):
            return False
        try:
            IndexedDataset(name)
        except DataError:
            return False
    return True


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _remove_stale_temporaries(prefix: str) -> None:
    """Delete temporary files that a killed run left behind (their writer process is gone)."""
    base = Path(prefix)
    # PREFIX.bin.tmpPID (merged output) and PREFIX_<input>.bin.tmpPID (--per-input outputs)
    candidates = list(base.parent.glob(base.name + ".*.tmp*")) + list(base.parent.glob(base.name + "_*.tmp*"))
    parts = Path(prefix + ".parts")
    if parts.is_dir():
        candidates += list(parts.glob("*.tmp*"))
    remove_orphaned_temporaries(candidates)


def _move_dataset(src: str, dst: str) -> None:
    """Rename a finished dataset: old index gone first, then .bin, then .idx."""
    src_idx, src_bin = dataset_paths(src)
    dst_idx, dst_bin = dataset_paths(dst)
    dst_idx.parent.mkdir(parents=True, exist_ok=True)
    dst_idx.unlink(missing_ok=True)
    os.replace(src_bin, dst_bin)
    os.replace(src_idx, dst_idx)


class _Progress:
    """A rich progress bar with MB/s and tokens/s on a terminal; nothing otherwise."""

    def __init__(self, total_files: int, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.bytes = self.tokens = 0
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("tokenizing"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), transient=False,
            )
            self._task = self._bar.add_task("tokenize", total=total_files, rate="")
            self._bar.start()

    def update(self, nbytes: int, ntokens: int, files_done: int = 0) -> None:
        self.bytes += nbytes
        self.tokens += ntokens
        if self.enabled:
            dt = max(time.monotonic() - self.start, 1e-9)
            rate = f"{self.bytes / dt / 1e6:.1f} MB/s {self.tokens / dt / 1e3:.0f}k tok/s"
            self._bar.update(self._task, advance=files_done, rate=rate)

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()


def tokenize_corpora(
    inputs: Sequence[str | os.PathLike],
    output_prefix: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    *,
    text_key: str = "text",
    workers: int | None = None,
    per_input: bool = False,
    shuffle_seed: int | None = None,
    on_error: str = "skip",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
    force: bool = False,
    fmt: str = "text",
    chat_template: str = "default",
) -> TokenizeResult:
    """Tokenize `inputs` into one dataset at `output_prefix` (or one per input with `per_input`).

    Every document gets the tokenizer's end-of-document id appended. With `fmt` chat, completion
    or preference the records go through `chat_template` and a loss-mask sidecar is written
    beside each output (see `auroragpt.data.conversations`). Outputs an earlier run
    finished with the same recipe are reused, so rerunning after an interruption resumes where it
    stopped; an existing output made from other inputs or settings is an error unless `force`.
    """
    started = time.monotonic()
    prefix = split_prefix(output_prefix)
    files = list_input_files(inputs)
    tokenizer = load_tokenizer(tokenizer_path)
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    errors = ReadErrors(on_error=on_error)
    parts, finals = _output_names(files, prefix, per_input)
    result = TokenizeResult(outputs=sorted(set(finals), key=finals.index), errors=errors)

    settings = {"tokenizer_sha256": _tokenizer_digest(tokenizer), "text_key": text_key, "shuffle_seed": shuffle_seed}
    with_mask = fmt != "text"
    if with_mask:  # lint the template once here: a bad one fails before any worker starts
        from auroragpt.data.chat_template import load_chat_template

        settings.update(format=fmt, chat_template_sha256=load_chat_template(chat_template, tokenizer).digest)
    inputs_of = [_input_id(f) for f in files]
    recipes = [{**settings, "inputs": [inputs_of[k]] if per_input else inputs_of} for k in range(len(files))]
    _check_parts_recipe(prefix, {**settings, "per_input": per_input, "inputs": inputs_of}, force)
    # A merged run has one final for all inputs: check it once, not once per input.
    checked = {final: _finished(final, with_mask) and not force and _check_output_recipe(final, recipe)
               for final, recipe in dict(zip(finals, recipes)).items()}
    done = [checked[final] for final in finals]
    if not per_input and done and all(done):
        result.reused = [str(f) for f in files]
        log.info("%s already exists with this recipe; nothing to do", prefix)
        return result
    todo = [k for k in range(len(files)) if not (per_input and done[k]) and not _finished(parts[k], with_mask)]
    result.reused = [str(files[k]) for k in range(len(files)) if k not in set(todo)]
    if result.reused:
        log.info("reusing %d finished output(s) from an earlier run", len(result.reused))

    _tokenize_parts(todo, files, parts, prefix, tokenizer, dtype, result, text_key=text_key, on_error=on_error,
                    fmt=fmt, chat_template=chat_template, workers=workers, chunk_bytes=chunk_bytes,
                    progress=progress)
    _finalize_outputs(parts, finals, recipes, per_input, shuffle_seed, prefix, with_mask)
    result.seconds = time.monotonic() - started
    log.debug(
        "tokenized %d documents, %d tokens from %.1f MB in %.1f s; %s",
        result.documents, result.tokens, result.bytes_read / 1e6, result.seconds, errors.summary(),
    )
    return result


def _tokenize_parts(todo: list[int], files: list, parts: list, prefix, tokenizer, dtype, result: TokenizeResult, *,
                    text_key: str, on_error: str, fmt: str, chat_template: str, workers: int | None,
                    chunk_bytes: int, progress: bool | None) -> None:
    """Tokenize the inputs numbered in `todo` into their part files, in a worker pool (in order, so
    the output does not depend on the worker count); a failure leaves no part without its work."""
    workers = max(1, workers or _usable_cpus())
    with_mask = fmt != "text"
    _remove_stale_temporaries(prefix)
    initargs = (str(tokenizer.path), text_key, on_error, dtype.str, True, fmt, chat_template)
    bar = _Progress(len(todo), progress)
    pool = None
    try:
        items = _work_items(todo, files, chunk_bytes, text_key, with_mask)
        if not todo:
            results: Iterator = iter(())
        elif workers == 1:
            _init_worker(*initargs[:4], False, *initargs[5:])
            results = map(_tokenize_task, items)
        else:
            pool = OrderedPool(_tokenize_task, workers, _init_worker, initargs)
            results = pool.imap(items, window=4 * workers)
        _write_parts(results, parts, dtype, result, bar, fmt)
        if pool is not None:
            pool.close()
            pool = None
    except WorkerDiedError as err:
        _drop_parts_without_work(prefix)
        raise DataError(
            f"a tokenization {err}",
            hint="finished inputs are kept; run the same command again to resume",
        ) from None
    except BaseException:
        _drop_parts_without_work(prefix)
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def _work_items(todo, files, chunk_bytes, text_key, records=False) -> Iterator[tuple[int, tuple | None]]:
    """(input k, chunk) for every chunk of every input to do, each input closed by (k, None)."""
    for k in todo:
        for task in _tasks_of(files[k], chunk_bytes, text_key, records):
            yield k, task
        yield k, None


def _write_parts(results: Iterator, parts, dtype, result: TokenizeResult, bar: _Progress, fmt: str = "text") -> None:
    """Write results, which arrive in input order, into one part dataset per input (and its
    loss-mask sidecar for chat, completion and preference data)."""
    from auroragpt.data.conversations import SEQUENCES_PER_DOCUMENT, mask_prefix

    writers: list[IndexedDatasetWriter] = []
    current = -1
    per_doc = SEQUENCES_PER_DOCUMENT.get(fmt, 1)
    try:
        for k, out in results:
            if not writers or current != k:
                writers, current = [IndexedDatasetWriter(parts[k], dtype)], k
                if fmt != "text":
                    writers.append(IndexedDatasetWriter(mask_prefix(parts[k]), np.uint8))
            if out is None:
                for writer in reversed(writers):  # the sidecar first: tokens finished mean both are
                    writer.finalize()
                writers = []
                bar.update(0, 0, files_done=1)
                continue
            tokens, lengths, nbytes, nbad, where, mask = out
            arrays = [tokens] if mask is None else [tokens, mask]
            for writer, array in zip(writers, arrays):
                _add_documents(writer, array, lengths, per_doc)
            result.errors.absorb(nbad, where)
            result.documents += int(lengths.size) // per_doc
            result.tokens += int(tokens.size)
            result.bytes_read += nbytes
            bar.update(nbytes, int(tokens.size))
    except BaseException:
        for writer in writers:
            writer.discard()
        raise


def _add_documents(writer: IndexedDatasetWriter, array: np.ndarray, lengths: np.ndarray, per_doc: int) -> None:
    """Documents of `per_doc` sequences each (a preference pair is one document of two)."""
    if per_doc == 1:
        writer.add_documents(array, lengths)
        return
    ends = np.cumsum(lengths)
    for d in range(0, lengths.size, per_doc):
        start = int(ends[d - 1]) if d else 0
        writer.add_document(array[start:int(ends[d + per_doc - 1])], lengths[d:d + per_doc].tolist())


def _finalize_outputs(parts, finals, recipes, per_input, shuffle_seed, prefix, with_mask: bool = False) -> None:
    """Turn finished parts into the final outputs (each recorded with its recipe), remove the parts.

    A loss-mask sidecar follows its tokens through the same moves and the same seeded shuffle
    (the permutation depends only on the seed and the document count), so they stay aligned."""
    from auroragpt.data.conversations import mask_prefix

    names = [lambda p: p, mask_prefix] if with_mask else [lambda p: p]
    parts_dir = Path(prefix + ".parts")
    if per_input:
        for part, final, recipe in zip(parts, finals, recipes):
            if not dataset_exists(part):
                continue  # reused from an earlier run
            _recipe_path(final).unlink(missing_ok=True)  # an output without a recipe is never reused
            for name in reversed(names):
                if shuffle_seed is None:
                    _move_dataset(name(part), name(final))
                else:
                    merge_datasets([name(part)], name(final), shuffle_seed=shuffle_seed, overwrite=True)
            _write_json(_recipe_path(final), recipe)
    elif parts_dir.exists():
        _recipe_path(prefix).unlink(missing_ok=True)
        for name in reversed(names):
            merge_datasets([name(p) for p in parts], name(prefix), shuffle_seed=shuffle_seed, overwrite=True)
        _write_json(_recipe_path(prefix), recipes[0])
    if parts_dir.exists():
        shutil.rmtree(parts_dir)


# -- recipes --------------------------------------------------------------------------------------
def _recipe_path(prefix: str) -> Path:
    return Path(prefix + ".recipe.json")


def _input_id(file: Path) -> list:
    st = file.stat()
    return [str(file.resolve()), st.st_size, st.st_mtime_ns]


def _tokenizer_digest(tokenizer) -> str:
    """Of the tokenizer's content (vocabulary, merges, normaliser) and end-of-document id, not its path."""
    text = tokenizer.backend.to_str() + f"\neod={tokenizer.eod_id}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1) + "\n")


def _read_json(path: Path) -> dict | None:
    """A recipe, or None when it is missing or unreadable (it then differs from any recipe)."""
    return read_json(path, default=None)


def _check_output_recipe(final: str, recipe: dict) -> bool:
    """True when the finished output `final` was made by this recipe; an error when made otherwise."""
    if _read_json(_recipe_path(final)) == recipe:
        return True
    raise DataError(
        f"{final}.bin/.idx already exist, but were made from other inputs, tokenizer or settings "
        f"(or with no record of how: {_recipe_path(final).name} is missing or differs)",
        hint="pass --force to replace them, or choose another --output-prefix",
    )


def _drop_parts_without_work(prefix: str) -> None:
    """A failed run that finished no input leaves nothing behind (not even the recipe)."""
    parts_dir = Path(prefix + ".parts")
    if parts_dir.is_dir() and not any(parts_dir.glob("*.idx")):
        shutil.rmtree(parts_dir, ignore_errors=True)


def _check_parts_recipe(prefix: str, recipe: dict, force: bool) -> None:
    """Parts of an interrupted run are reused only by the same command; `force` starts afresh."""
    parts_dir = Path(prefix + ".parts")
    path = parts_dir / "recipe.json"
    if parts_dir.exists() and _read_json(path) != recipe:
        if not force and any(parts_dir.glob("*.idx")):
            raise DataError(
                f"{parts_dir} holds the unfinished work of an earlier run with other inputs, tokenizer or settings",
                hint="run that same command again to finish it, or pass --force to discard it and start afresh",
            )
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write_json(path, recipe)
