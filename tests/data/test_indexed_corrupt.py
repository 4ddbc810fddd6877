"""Corrupt, truncated or mismatched datasets raise DataError naming the file; never a crash."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from auroragpt.data.indexed import HEADER_SIZE, IndexedDataset, IndexedDatasetWriter
from auroragpt.errors import DataError


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    with IndexedDatasetWriter(tmp_path / "ds", np.uint16) as writer:
        for _ in range(50):
            writer.add_document(rng.integers(0, 1000, rng.integers(1, 100)))
    return tmp_path / "ds"


def patch(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def idx(prefix):
    return prefix.with_name(prefix.name + ".idx")


def bin_(prefix):
    return prefix.with_name(prefix.name + ".bin")


CASES = {
    "wrong magic": (lambda p: patch(idx(p), 0, b"NOTMMIDX\x00"), "not a Megatron indexed dataset"),
    "wrong version": (lambda p: patch(idx(p), 9, struct.pack("<Q", 2)), "unsupported index version 2"),
    "unknown dtype": (lambda p: patch(idx(p), 17, bytes([42])), "unknown dtype code 42"),
    "truncated idx header": (lambda p: idx(p).write_bytes(idx(p).read_bytes()[:20]), "truncated index"),
    "truncated idx body": (lambda p: idx(p).write_bytes(idx(p).read_bytes()[:-9]), "truncated index"),
    "sequence count too big": (lambda p: patch(idx(p), 18, struct.pack("<Q", 10**12)), "truncated index"),
    "document count mismatch": (lambda p: patch(idx(p), 26, struct.pack("<Q", 40)), "does not match its header"),
    "bad document indices": (lambda p: patch(idx(p), len(idx(p).read_bytes()) - 8, struct.pack("<q", 7)),
                             "document indices"),
    "truncated bin": (lambda p: bin_(p).write_bytes(bin_(p).read_bytes()[:100]), "last sequence ends at byte"),
    "odd-sized bin": (lambda p: bin_(p).write_bytes(bin_(p).read_bytes() + b"\x00"), "not a multiple"),
    "missing bin": (lambda p: bin_(p).unlink(), "data file not found"),
    "missing idx": (lambda p: idx(p).unlink(), "index file not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_dataset_raises_data_error(good, case):
    corrupt, message = CASES[case]
    corrupt(good)
    with pytest.raises(DataError, match=message) as info:
        IndexedDataset(good)
    assert "ds." in str(info.value)  # names the file


def test_pointer_past_end_inside_the_file(good):
    """A middle pointer past the .bin (the last one fine) is caught on access and by validate()."""
    ds = IndexedDataset(good)
    pointer_offset = HEADER_SIZE + 4 * len(ds) + 8 * 10
    del ds
    patch(idx(good), pointer_offset, struct.pack("<q", 10**9))
    ds = IndexedDataset(good)
    with pytest.raises(DataError, match="past the end"):
        ds.get(10)
    with pytest.raises(DataError, match="sequence 10"):
        ds.validate()


def test_cli_reports_corruption_without_traceback(good):
    patch(idx(good), 17, bytes([99]))
    proc = subprocess.run(
        [sys.executable, "-m", "auroragpt.cli", "data", "inspect", str(good)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown dtype code 99" in proc.stderr and "Traceback" not in proc.stderr
