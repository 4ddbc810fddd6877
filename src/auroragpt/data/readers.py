"""Documents out of corpus files: .jsonl, .jsonl.gz, .jsonl.zst, .parquet and .txt, or folders of them.

A `.txt` file is one document. JSON lines and parquet rows carry the document under `text_key`.
Reading is split in two so that tokenization can run in parallel: the main process cuts files into
chunks of whole lines (cheap), and workers parse and tokenize them. Malformed lines are recorded
with file and line number in a `ReadErrors`; `on_error="fail"` turns the first one into a DataError.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from auroragpt.errors import DataError

FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl.gz", ".jsonl.zst": "jsonl.zst", ".parquet": "parquet", ".txt": "txt"}
MAX_LOCATIONS = 10


def input_format(path: str | os.PathLike) -> str | None:
    """The format named by a file's suffix, or None when we do not read it."""
    name = Path(path).name
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def list_input_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, sorted) into supported files; files are taken as given."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and input_format(p))
            if not found:
                raise DataError(f"{path}: folder holds no {', '.join(FORMATS)} files")
            files.extend(found)
        elif path.is_file():
            if not input_format(path):
                raise DataError(
                    f"{path}: unsupported input format",
                    hint=f"inputs must end in one of {', '.join(FORMATS)}",
                )
            files.append(path)
        else:
            raise DataError(f"{path}: input not found")
    return files


@dataclass
class ReadErrors:
    """Malformed inputs seen so far: a count and the first few locations."""

    on_error: str = "skip"
    count: int = 0
    locations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "fail"):
            raise DataError(f"on_error must be 'skip' or 'fail', got {self.on_error!r}")

    def record(self, file: str | os.PathLike, line: int, reason: str) -> None:
        where = f"{file}:{line}: {reason}"
        if self.on_error == "fail":
            raise DataError(f"malformed input at {where}", hint="fix the line, or pass --on-error=skip")
        self.count += 1
        if len(self.locations) < MAX_LOCATIONS:
            self.locations.append(where)

    def absorb(self, count: int, locations: list[str]) -> None:
        """Add what a worker process saw."""
        self.count += count
        room = MAX_LOCATIONS - len(self.locations)
        self.locations.extend(locations[: max(room, 0)])

    def summary(self) -> str:
        if not self.count:
            return "no malformed input"
        lines = [f"skipped {self.count} malformed input line(s); first ones:"] + [f"  {x}" for x in self.locations]
        return "\n".join(lines)


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every frame of a .zst file, and an error if the file ends inside a
    frame (zstandard's stream_reader reports such a cut-off file as a clean, shorter end)."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._raw = open(path, "rb")
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._frame = None
        self._pending = bytearray()
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._offset == len(self._pending):
            if not self._fill():
                return 0
        n = min(len(buffer), len(self._pending) - self._offset)
        buffer[:n] = self._pending[self._offset:self._offset + n]
        self._offset += n
        return n

    def _fill(self) -> bool:
        data = self._raw.read(1 << 20)
        if not data:
            if self._frame is not None:
                raise EOFError("the file ends inside a zstd frame (truncated or still being written)")
            return False
        self._pending, self._offset = bytearray(), 0
        while data:
            if self._frame is None:
                self._frame = self._new_frame()
            self._pending += self._frame.decompress(data)
            data = b""
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(path: Path) -> IO[bytes]:
    """The decompressed byte stream of a file (gzip and zstd by suffix)."""
    fmt = input_format(path)
    try:
        if fmt == "jsonl.gz":
            import gzip

            return gzip.open(path, "rb")
        if fmt == "jsonl.zst":
            return io.BufferedReader(_ZstdFrames(path), buffer_size=1 << 20)
        return open(path, "rb")
    except OSError as err:
        raise DataError(f"{path}: cannot open: {err.strerror or err}") from None


def iter_line_chunks(path: Path, chunk_bytes: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, bytes of whole lines) pieces of a JSON-lines file."""
    line = 1
    rest = b""
    with open_binary(path) as stream:
        while True:
            try:
                block = stream.read(chunk_bytes)
            except Exception as err:  # corrupt gzip (OSError, EOFError) or zstd (ZstdError) streams
                raise DataError(f"{path}: cannot decompress after line {line}: {err}") from None
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                rest = block
                continue
            piece, rest = block[:cut], block[cut:]
            yield line, piece
            line += piece.count(b"\n")
    if rest:
        yield line, rest


def parse_jsonl_chunk(chunk: bytes, first_line: int, file: str, text_key: str, errors: ReadErrors) -> list[str]:
    """The texts of the JSON lines in `chunk`; bad lines go to `errors`. Blank lines are ignored."""
    return [record[text_key] for _, record in parse_jsonl_records(chunk, first_line, file, text_key, errors)]


def parse_jsonl_records(chunk: bytes, first_line: int, file: str, text_key: str,
                        errors: ReadErrors) -> list[tuple[int, dict]]:
    """(line number, record) of the JSON lines in `chunk` whose `text_key` is a string (curation
    keeps the other fields); bad lines go to `errors`, in line order. Blank lines are ignored."""
    texts: list[tuple[int, dict]] = []
    for number, raw in enumerate(chunk.split(b"\n"), start=first_line):
        record = _json_object(raw, file, number, errors)
        if record is None:
            continue
        if text_key not in record:
            errors.record(file, number, f"no {text_key!r} field")
        elif not isinstance(record[text_key], str):
            errors.record(file, number, f"{text_key!r} is {type(record[text_key]).__name__}, not a string")
        else:
            texts.append((number, record))
    return texts


def _json_object(raw: bytes, file: str, number: int, errors: ReadErrors) -> dict | None:
    """One JSON line as an object; None for a blank line, and for a bad one (recorded in `errors`)."""
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        errors.record(file, number, f"bad JSON ({str(err).split(':')[0]})")
        return None
    if not isinstance(record, dict):
        errors.record(file, number, f"expected a JSON object, got {type(record).__name__}")
        return None
    return record


def iter_parquet_batches(path: Path, text_key: str, batch_rows: int = 4096) -> Iterator[tuple[int, list]]:
    """(number of the first row, values of `text_key`) batches of a parquet file; rows count from 1."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid and friends
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    if text_key not in parquet.schema_arrow.names:
        raise DataError(
            f"{path}: no column {text_key!r} (columns: {', '.join(parquet.schema_arrow.names)})",
            hint="pass --text-key with the column that holds the text",
        )
    import pyarrow as pa

    column_type = parquet.schema_arrow.field(text_key).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column {text_key!r} holds {column_type}, not text",
                        hint="pass --text-key with the column that holds the text")
    row = 1
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[text_key]):
        values = batch.column(0).to_pylist()
        yield row, values
        row += len(values)


def parse_jsonl_objects(chunk: bytes, first_line: int, file: str, errors: ReadErrors) -> list[tuple[int, dict]]:
    """(line number, object) of every JSON line in `chunk` (chat and preference data); bad lines go to `errors`."""
    records: list[tuple[int, dict]] = []
    for number, raw in enumerate(chunk.split(b"\n"), start=first_line):
        record = _json_object(raw, file, number, errors)
        if record is not None:
            records.append((number, record))
    return records


def iter_parquet_records(path: Path, batch_rows: int = 4096) -> Iterator[tuple[int, list[dict]]]:
    """(number of the first row, rows as dicts) batches of a parquet file; rows count from 1."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid and friends
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    row = 1
    for batch in parquet.iter_batches(batch_size=batch_rows):
        rows = batch.to_pylist()
        yield row, rows
        row += len(rows)


def texts_from_values(values: list, first_row: int, file: str, text_key: str, errors: ReadErrors) -> list[str]:
    texts = []
    for number, value in enumerate(values, start=first_row):
        if isinstance(value, str):
            texts.append(value)
        else:
            errors.record(file, number, f"{text_key!r} is {type(value).__name__}, not a string")
    return texts


def read_txt(path: Path, errors: ReadErrors) -> list[str]:
    """A .txt file as one document (none when it is not UTF-8)."""
    data = path.read_bytes()
    try:
        return [data.decode("utf-8")]
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        errors.record(path, line, "not UTF-8 text")
        return []


def iter_texts(path: Path, text_key: str = "text", errors: ReadErrors | None = None) -> Iterator[str]:
    """Every document of one file, in order, in this process (for training tokenizers and tests)."""
    errors = errors if errors is not None else ReadErrors()
    fmt = input_format(path)
    if fmt == "txt":
        yield from read_txt(path, errors)
    elif fmt == "parquet":
        for row, values in iter_parquet_batches(path, text_key):
            yield from texts_from_values(values, row, str(path), text_key, errors)
    elif fmt is not None:
        for line, chunk in iter_line_chunks(path):
            yield from parse_jsonl_chunk(chunk, line, str(path), text_key, errors)
    else:
        raise DataError(f"{path}: unsupported input format")
