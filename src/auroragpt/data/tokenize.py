"""Parallel tokenization of corpus files into indexed datasets.

The main process cuts every input into chunks (whole JSON lines, parquet row batches, one .txt
file) and hands them to worker processes, which parse, tokenize with `encode_documents` and send
back numpy arrays. Results are consumed in submission order, so the output does not depend on the
number of workers. Each input first becomes a finished dataset of its own in `PREFIX.parts/`
(written atomically), so a run that is killed and started again redoes only unfinished inputs;
the parts are then merged (and shuffled, with `shuffle_seed`) or renamed into their final names.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from auroragpt.data.indexed import (
    IndexedDataset,
    IndexedDatasetWriter,
    dataset_exists,
    dataset_paths,
    dtype_for_vocab,
    split_prefix,
)
from auroragpt.data.merge import merge_datasets
from auroragpt.data.readers import (
    ReadErrors,
    input_format,
    iter_line_chunks,
    iter_parquet_batches,
    list_input_files,
    parse_jsonl_chunk,
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


def _init_worker(tokenizer_path: str, text_key: str, on_error: str, dtype: str) -> None:
    # One thread per worker process: parallelism comes from the processes.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    _WORKER.update(
        tokenizer=load_tokenizer(tokenizer_path), text_key=text_key, on_error=on_error, dtype=np.dtype(dtype)
    )


def _tokenize_task(task: tuple) -> tuple[np.ndarray, np.ndarray, int, int, list[str]]:
    """Parse and tokenize one chunk: (tokens, lengths, bytes read, malformed count, locations)."""
    kind, file, first, payload = task
    errors = ReadErrors(on_error=_WORKER["on_error"])
    key = _WORKER["text_key"]
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
    return tokens, lengths, nbytes, errors.count, errors.locations


def _tasks_of(file: Path, chunk_bytes: int, text_key: str) -> Iterator[tuple]:
    fmt = input_format(file)
    if fmt == "txt":
        yield ("txt", str(file), 1, None)
    elif fmt == "parquet":
        rows = max(64, chunk_bytes // 2048)
        for first, values in iter_parquet_batches(file, text_key, rows):
            yield ("values", str(file), first, values)
    else:
        for first, chunk in iter_line_chunks(file, chunk_bytes):
            yield ("jsonl", str(file), first, chunk)


class _InlineExecutor:
    """Runs tasks in this process (workers=1): no start-up cost, same code path."""

    def __init__(self, initargs: tuple) -> None:
        _init_worker(*initargs)

    def submit(self, fn, task) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(task))
        except BaseException as err:  # delivered at .result(), like a process pool
            fut.set_exception(err)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


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


def _finished(prefix: str) -> bool:
    """A dataset that an earlier run completed: both files present and the index consistent."""
    if not dataset_exists(prefix):
        return False
    try:
        IndexedDataset(prefix)
    except DataError:
        return False
    return True


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
) -> TokenizeResult:
    """Tokenize `inputs` into one dataset at `output_prefix` (or one per input with `per_input`).

    Every document gets the tokenizer's end-of-document id appended. Outputs an earlier run
    finished are reused, so rerunning after an interruption resumes where it stopped.
    """
    started = time.monotonic()
    prefix = split_prefix(output_prefix)
    files = list_input_files(inputs)
    tokenizer = load_tokenizer(tokenizer_path)
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    errors = ReadErrors(on_error=on_error)
    parts, finals = _output_names(files, prefix, per_input)
    result = TokenizeResult(outputs=sorted(set(finals), key=finals.index), errors=errors)

    if not per_input and _finished(prefix) and not Path(prefix + ".parts").exists():
        result.reused = [str(f) for f in files]
        log.info("%s already exists; nothing to do", prefix)
        return result
    todo = [k for k in range(len(files)) if not (per_input and _finished(finals[k])) and not _finished(parts[k])]
    result.reused = [str(files[k]) for k in range(len(files)) if k not in set(todo)]
    if result.reused:
        log.info("reusing %d finished output(s) from an earlier run", len(result.reused))

    workers = max(1, workers or os.cpu_count() or 1)
    initargs = (str(tokenizer.path), text_key, on_error, dtype.str)
    bar = _Progress(len(todo), progress)
    if not todo:
        executor = None
    elif workers == 1:
        executor = _InlineExecutor(initargs)
    else:
        import multiprocessing

        executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=initargs
        )
    try:
        if executor is not None:
            _run_tasks(executor, todo, files, parts, dtype, chunk_bytes, text_key, workers, result, bar)
    except BrokenProcessPool:
        raise DataError(
            "a tokenization worker process died (killed by a signal or out of memory)",
            hint="finished inputs are kept; run the same command again to resume",
        ) from None
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    _finalize_outputs(parts, finals, per_input, shuffle_seed, prefix)
    result.seconds = time.monotonic() - started
    log.info(
        "tokenized %d documents, %d tokens from %.1f MB in %.1f s; %s",
        result.documents, result.tokens, result.bytes_read / 1e6, result.seconds, errors.summary(),
    )
    return result


def _run_tasks(executor, todo, files, parts, dtype, chunk_bytes, text_key, workers, result, bar) -> None:
    """Submit chunks with a bounded window and write results in order, one part per input."""
    window = 2 * workers + 2
    pending: deque = deque()  # (file index, future or None for "this file is complete")

    def stream() -> Iterator[tuple[int, tuple | None]]:
        for k in todo:
            for task in _tasks_of(files[k], chunk_bytes, text_key):
                yield k, task
            yield k, None

    writer: IndexedDatasetWriter | None = None
    current = -1
    try:
        source = stream()
        exhausted = False
        while True:
            while not exhausted and sum(1 for _, f in pending if f is not None) < window:
                try:
                    k, task = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((k, executor.submit(_tokenize_task, task) if task is not None else None))
            if not pending:
                break
            k, fut = pending.popleft()
            if writer is None or current != k:
                writer, current = IndexedDatasetWriter(parts[k], dtype), k
            if fut is None:
                writer.finalize()
                writer = None
                bar.update(0, 0, files_done=1)
                continue
            tokens, lengths, nbytes, nbad, where = fut.result()
            writer.add_documents(tokens, lengths)
            result.errors.absorb(nbad, where)
            result.documents += int(lengths.size)
            result.tokens += int(tokens.size)
            result.bytes_read += nbytes
            bar.update(nbytes, int(tokens.size))
    except BaseException:
        if writer is not None:
            writer.discard()
        raise


def _finalize_outputs(parts, finals, per_input, shuffle_seed, prefix) -> None:
    """Turn finished parts into the final outputs and remove the parts folder."""
    parts_dir = Path(prefix + ".parts")
    if per_input:
        for part, final in zip(parts, finals):
            if not dataset_exists(part):
                continue  # reused from an earlier run
            if shuffle_seed is None:
                _move_dataset(part, final)
            else:
                merge_datasets([part], final, shuffle_seed=shuffle_seed, overwrite=True)
    elif parts_dir.exists():
        merge_datasets(parts, prefix, shuffle_seed=shuffle_seed, overwrite=True)
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
