"""Reader and writer for Megatron's indexed dataset format (MMIDIDX version 1).

Layout of `PREFIX.idx` (little endian): the 9-byte magic `MMIDIDX\\x00\\x00`, a uint64 version (1),
a uint8 dtype code, a uint64 sequence count N, a uint64 document-index count D (documents + 1),
then N int32 sequence lengths, N int64 byte pointers into `PREFIX.bin`, and D int64 document
indices (sequence numbers where each document starts, the first 0 and the last N). `PREFIX.bin`
holds the tokens of every sequence back to back.

Files written by megatron-core read identically here and vice versa. Opening costs one 34-byte
read plus two memory maps; every size is checked before mapping, so a corrupt or truncated file
raises `DataError` naming the file instead of crashing the interpreter.
"""

from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Iterable

import numpy as np

from auroragpt.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8  # 34 bytes

# Megatron's dtype code table (megatron.core.datasets.indexed_dataset.DType); the one source here.
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
_CODE_OF_DTYPE = {dtype: code for code, dtype in DTYPE_CODES.items()}
_INT32_MAX = 2**31 - 1


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every token id fits (vocabularies up to 65,535), int32 otherwise."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def split_prefix(prefix: str | os.PathLike) -> str:
    """The dataset prefix, accepting `X`, `X.bin` or `X.idx`."""
    text = os.fspath(prefix)
    for suffix in (".bin", ".idx"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def dataset_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """(`.idx` path, `.bin` path) of a dataset prefix."""
    base = split_prefix(prefix)
    return Path(base + ".idx"), Path(base + ".bin")


def dataset_exists(prefix: str | os.PathLike) -> bool:
    idx_path, bin_path = dataset_paths(prefix)
    return idx_path.is_file() and bin_path.is_file()


@dataclass(frozen=True)
class IndexHeader:
    """What the first 34 bytes of a `.idx` say. `num_documents` counts documents (D - 1)."""

    dtype: np.dtype
    num_sequences: int
    num_documents: int


def _parse_header(raw: bytes, idx_path: Path) -> IndexHeader:
    if len(raw) < HEADER_SIZE:
        raise DataError(
            f"{idx_path}: truncated index ({len(raw)} bytes, the header alone needs {HEADER_SIZE})",
            hint="the file was cut short; re-create it with `auroragpt data tokenize`",
        )
    if raw[: len(MAGIC)] != MAGIC:
        raise DataError(
            f"{idx_path}: not a Megatron indexed dataset (magic {raw[:len(MAGIC)]!r}, expected {MAGIC!r})",
            hint="point at the PREFIX of a .bin/.idx pair written by Megatron or `auroragpt data tokenize`",
        )
    (version,) = struct.unpack_from("<Q", raw, len(MAGIC))
    if version != VERSION:
        raise DataError(f"{idx_path}: unsupported index version {version} (only version {VERSION} exists)")
    (code,) = struct.unpack_from("<B", raw, len(MAGIC) + 8)
    if code not in DTYPE_CODES:
        raise DataError(
            f"{idx_path}: unknown dtype code {code} (known: "
            + ", ".join(f"{c}={d.name}" for c, d in DTYPE_CODES.items())
            + ")",
            hint="the index is corrupt; re-create it",
        )
    num_sequences, doc_index_count = struct.unpack_from("<QQ", raw, len(MAGIC) + 9)
    if doc_index_count < 1:
        raise DataError(f"{idx_path}: document index count is 0; a valid index holds at least the leading 0")
    return IndexHeader(DTYPE_CODES[code], int(num_sequences), int(doc_index_count) - 1)


def read_index_header(prefix: str | os.PathLike) -> IndexHeader:
    """Read only the header of `PREFIX.idx`: cheap enough to call on thousands of files."""
    idx_path, _ = dataset_paths(prefix)
    try:
        with open(idx_path, "rb") as handle:
            raw = handle.read(HEADER_SIZE)
    except FileNotFoundError:
        raise DataError(f"{idx_path}: index file not found", hint="check the dataset prefix") from None
    except OSError as err:
        raise DataError(f"{idx_path}: cannot read index: {err.strerror}") from None
    return _parse_header(raw, idx_path)


def read_index_value(prefix: str | os.PathLike, offset: int, fmt: str, what: str) -> int:
    """One number of `PREFIX.idx` at byte `offset` (struct format `fmt`) with a single read: lets
    thousands of files be checked without mapping their indices."""
    idx_path, _ = dataset_paths(prefix)
    size = struct.calcsize(fmt)
    try:
        fd = os.open(idx_path, os.O_RDONLY)
        try:
            raw = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    except OSError as err:
        raise DataError(f"{idx_path}: cannot read index: {err.strerror}") from None
    if len(raw) != size:
        raise DataError(f"{idx_path}: truncated index (no {what})",
                        hint="the file was cut short; re-create it with `auroragpt data tokenize`")
    return struct.unpack(fmt, raw)[0]


def token_extent_bytes(prefix: str | os.PathLike, header: IndexHeader) -> int:
    """Bytes of `.bin` the index accounts for: where its last sequence ends (two small reads)."""
    n = header.num_sequences
    if n == 0:
        return 0
    length = read_index_value(prefix, HEADER_SIZE + 4 * (n - 1), "<i", f"length of sequence {n - 1}")
    pointer = read_index_value(prefix, HEADER_SIZE + 4 * n + 8 * (n - 1), "<q", f"pointer of sequence {n - 1}")
    return pointer + length * header.dtype.itemsize


class IndexedDataset:
    """A memory-mapped indexed dataset. Nothing but the header is read when it opens.

    `len(ds)` counts sequences (one per document for everything `auroragpt` writes; Megatron may
    split a document into several sequences, which `document_indices` records).
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = split_prefix(prefix)
        self._open()

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> None:
        idx_path, bin_path = dataset_paths(self.prefix)
        self.idx_path, self.bin_path = idx_path, bin_path
        header = read_index_header(self.prefix)
        if not bin_path.is_file():
            raise DataError(f"{bin_path}: data file not found beside {idx_path.name}")
        self.header = header
        self.dtype: np.dtype = header.dtype
        n, d = header.num_sequences, header.num_documents + 1
        expected = HEADER_SIZE + n * (4 + 8) + d * 8
        idx_size = idx_path.stat().st_size
        # Megatron's multimodal variant appends one int8 mode per sequence; the tokens are the same.
        if idx_size < expected:
            raise DataError(
                f"{idx_path}: truncated index ({idx_size} bytes; the header promises {n} sequences and "
                f"{d - 1} documents, which need {expected} bytes)",
                hint="the file was cut short; re-create it",
            )
        if idx_size not in (expected, expected + n):
            raise DataError(
                f"{idx_path}: index size {idx_size} bytes does not match its header "
                f"({n} sequences, {d - 1} documents need {expected} bytes)",
                hint="the index is corrupt or was written by another tool; re-create it",
            )
        bin_size = bin_path.stat().st_size
        if bin_size % self.dtype.itemsize:
            raise DataError(
                f"{bin_path}: size {bin_size} bytes is not a multiple of the {self.dtype.name} token size",
                hint="the data file was cut short; re-create the dataset",
            )
        self._bin_size = bin_size
        self._idx_map = np.memmap(idx_path, dtype=np.uint8, mode="r")
        offset = HEADER_SIZE
        self.sequence_lengths: np.ndarray = np.frombuffer(self._idx_map, np.int32, n, offset)
        offset += 4 * n
        self.sequence_pointers: np.ndarray = np.frombuffer(self._idx_map, np.int64, n, offset)
        offset += 8 * n
        self.document_indices: np.ndarray = np.frombuffer(self._idx_map, np.int64, d, offset)
        if self.document_indices[0] != 0 or self.document_indices[-1] != n:
            raise DataError(
                f"{idx_path}: document indices run from {int(self.document_indices[0])} to "
                f"{int(self.document_indices[-1])}, expected 0 to the sequence count {n}",
                hint="the index is corrupt; re-create it",
            )
        if n:
            end = int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * self.dtype.itemsize
            if end > bin_size or self.sequence_pointers[-1] < 0 or self.sequence_lengths[-1] < 0:
                raise DataError(
                    f"{idx_path}: the last sequence ends at byte {end} but {bin_path.name} holds only "
                    f"{bin_size} bytes",
                    hint="the .bin is truncated or belongs to another index; re-create the dataset",
                )
        self._bin_map = np.memmap(bin_path, dtype=self.dtype, mode="r") if bin_size else np.empty(0, self.dtype)

    def validate(self) -> None:
        """Check every pointer and length (O(sequences)); opening checks only the last one."""
        lengths = self.sequence_lengths.astype(np.int64)
        if (lengths < 0).any():
            bad = int(np.argmax(lengths < 0))
            raise DataError(f"{self.idx_path}: sequence {bad} has negative length {int(lengths[bad])}")
        pointers = self.sequence_pointers
        ends = pointers + lengths * self.dtype.itemsize
        if len(pointers) and ((pointers < 0).any() or (ends > self._bin_size).any()):
            bad = int(np.argmax((pointers < 0) | (ends > self._bin_size)))
            raise DataError(
                f"{self.idx_path}: sequence {bad} spans bytes {int(pointers[bad])}..{int(ends[bad])}, "
                f"past the end of {self.bin_path.name} ({self._bin_size} bytes)"
            )
        if (np.diff(self.document_indices) < 0).any():
            raise DataError(f"{self.idx_path}: document indices are not sorted")

    # -- pickling (DataLoader workers re-open the maps instead of copying them) -------------------
    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.prefix = state["prefix"]
        self._open()

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.header.num_sequences

    @property
    def num_documents(self) -> int:
        return self.header.num_documents

    @property
    def num_tokens(self) -> int:
        """Tokens in the .bin (its size over the token size)."""
        return self._bin_size // self.dtype.itemsize

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens `offset : offset+length` of sequence `i`, as a read-only view of the map."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {self.prefix} ({n} sequences)")
        i = int(i) % n
        seq_len = int(self.sequence_lengths[i])
        if length is None:
            length = seq_len - offset
        if offset < 0 or length < 0 or offset + length > seq_len:
            raise IndexError(f"tokens {offset}..{offset + length} out of range for sequence {i} of length {seq_len}")
        pointer = int(self.sequence_pointers[i])
        if pointer % self.dtype.itemsize:
            raise DataError(f"{self.idx_path}: sequence {i} pointer {pointer} is not aligned to the token size")
        start = pointer // self.dtype.itemsize + offset
        if pointer < 0 or start + length > len(self._bin_map):
            raise DataError(
                f"{self.idx_path}: sequence {i} points past the end of {self.bin_path.name}",
                hint="the .bin is truncated or belongs to another index; re-create the dataset",
            )
        return self._bin_map[start : start + length]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def read_tokens(self, token_offset: int, count: int) -> np.ndarray:
        """A contiguous slice of the whole token stream, across document boundaries."""
        if token_offset < 0 or count < 0 or token_offset + count > self.num_tokens:
            raise IndexError(
                f"tokens {token_offset}..{token_offset + count} out of range for {self.prefix} "
                f"({self.num_tokens} tokens)"
            )
        return self._bin_map[token_offset : token_offset + count]

    def document_sequences(self, doc: int) -> range:
        """Sequence numbers that make up document `doc`."""
        return range(int(self.document_indices[doc]), int(self.document_indices[doc + 1]))

    def __repr__(self) -> str:
        return (
            f"IndexedDataset({self.prefix!r}, sequences={len(self)}, documents={self.num_documents}, "
            f"tokens={self.num_tokens}, dtype={self.dtype.name})"
        )


class IndexedDatasetWriter:
    """Writes `PREFIX.bin`/`PREFIX.idx` under temporary names and renames them when finalized.

    The `.bin` is renamed first and the `.idx` last, and any old `.idx` is removed before either,
    so a crash never leaves an index that looks valid beside a partial data file. As a context
    manager it finalizes on success and discards everything on an exception.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type | str) -> None:
        self.prefix = split_prefix(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF_DTYPE:
            raise DataError(f"{self.prefix}: dtype {self.dtype} has no Megatron dtype code")
        self.idx_path, self.bin_path = dataset_paths(self.prefix)
        self.idx_path.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp{os.getpid()}"
        self._tmp_bin = Path(str(self.bin_path) + tag)
        self._tmp_idx = Path(str(self.idx_path) + tag)
        self._bin = open(self._tmp_bin, "wb")
        self._lengths = array("i")
        self._doc_starts = array("q", [0])  # sequence number where each document ends, after a 0
        self._num_tokens = 0
        self._done = False

    @property
    def num_documents(self) -> int:
        return len(self._doc_starts) - 1

    @property
    def num_tokens(self) -> int:
        return self._num_tokens

    def _as_tokens(self, tokens: Iterable[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if arr.dtype != self.dtype:
            if arr.size and np.issubdtype(self.dtype, np.integer):
                info = np.iinfo(self.dtype)
                lo, hi = arr.min(), arr.max()
                if lo < info.min or hi > info.max:
                    raise DataError(
                        f"{self.prefix}: token id {int(hi) if hi > info.max else int(lo)} does not fit "
                        f"{self.dtype.name}",
                        hint="use int32 for vocabularies larger than 65,535",
                    )
            arr = arr.astype(self.dtype)
        return arr

    def add_document(self, tokens: Iterable[int] | np.ndarray, sequence_lengths: Iterable[int] | None = None) -> None:
        """Append one document: one sequence, or several when `sequence_lengths` splits it (Megatron style)."""
        arr = self._as_tokens(tokens)
        lengths = [arr.size] if sequence_lengths is None else [int(x) for x in sequence_lengths]
        if sum(lengths) != arr.size or min(lengths, default=0) < 0:
            raise ValueError(f"sequence lengths {lengths} do not split {arr.size} tokens")
        if max(lengths, default=0) > _INT32_MAX:
            raise DataError(f"{self.prefix}: a sequence of {max(lengths)} tokens exceeds the format's int32 length")
        self._bin.write(arr.tobytes())
        self._lengths.extend(lengths)
        self._doc_starts.append(len(self._lengths))
        self._num_tokens += arr.size

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append many documents at once: `tokens` is their concatenation, `lengths` their sizes."""
        arr = self._as_tokens(tokens)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != arr.size:
            raise ValueError(f"lengths sum to {int(lengths.sum())} but {arr.size} tokens were given")
        self._bin.write(arr.tobytes())
        first = len(self._lengths)
        self._lengths.frombytes(lengths.astype(np.int32).tobytes())
        self._doc_starts.frombytes((first + np.arange(1, lengths.size + 1, dtype=np.int64)).tobytes())
        self._num_tokens += arr.size

    def add_dataset(self, other: IndexedDataset) -> None:
        """Append a whole dataset (its sequences and document boundaries) without decoding tokens."""
        if other.dtype != self.dtype:
            raise DataError(
                f"{other.prefix}: dtype {other.dtype.name} differs from {self.dtype.name} of {self.prefix}",
                hint="merge only datasets tokenized with the same vocabulary size",
            )
        other.validate()
        first = len(self._lengths)
        self._lengths.frombytes(np.ascontiguousarray(other.sequence_lengths).tobytes())
        self._doc_starts.frombytes((first + np.asarray(other.document_indices[1:], np.int64)).tobytes())
        with open(other.bin_path, "rb") as src:
            start = int(other.sequence_pointers[0]) if len(other) else 0
            remaining = int(other.sequence_lengths.astype(np.int64).sum()) * self.dtype.itemsize
            src.seek(start)
            while remaining:
                block = src.read(min(remaining, 64 << 20))
                if not block:
                    raise DataError(f"{other.bin_path}: ended early while copying")
                self._bin.write(block)
                remaining -= len(block)
        self._num_tokens += int(other.sequence_lengths.astype(np.int64).sum())

    def finalize(self) -> IndexedDataset:
        """Write the index and move both files into place; returns the dataset opened for reading."""
        if self._done:
            raise RuntimeError(f"{self.prefix}: writer already finalized or discarded")
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        lengths = np.frombuffer(self._lengths, dtype=np.int32) if len(self._lengths) else np.empty(0, np.int32)
        pointers = np.zeros(lengths.size, dtype=np.int64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
        pointers *= self.dtype.itemsize
        doc_indices = np.frombuffer(self._doc_starts, dtype=np.int64)
        with open(self._tmp_idx, "wb") as out:
            out.write(MAGIC)
            out.write(struct.pack("<QBQQ", VERSION, _CODE_OF_DTYPE[self.dtype], lengths.size, doc_indices.size))
            out.write(lengths.tobytes())
            out.write(pointers.tobytes())
            out.write(doc_indices.tobytes())
            out.flush()
            os.fsync(out.fileno())
        self.idx_path.unlink(missing_ok=True)
        os.replace(self._tmp_bin, self.bin_path)
        os.replace(self._tmp_idx, self.idx_path)
        self._done = True
        return IndexedDataset(self.prefix)

    def discard(self) -> None:
        """Drop everything written so far; the final names are never touched."""
        if not self._bin.closed:
            self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)
        self._tmp_idx.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._done:
            return
        if exc_type is None:
            self.finalize()
        else:
            self.discard()
