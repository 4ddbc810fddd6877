"""Data-file-list parsing: both forms, normalisation, and every bad-list case named with file:line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auroragpt.data.filelist import parse_file_list
from auroragpt.data.indexed import IndexedDatasetWriter
from auroragpt.errors import DataError


def write_dataset(prefix, lengths, dtype=np.uint16):
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for n in lengths:
            writer.add_document(np.arange(n) % 1000)


@pytest.fixture()
def datasets(tmp_path):
    write_dataset(tmp_path / "web" / "a", [100, 200])  # 300 tokens
    write_dataset(tmp_path / "web" / "b", [700])  # 700 tokens
    write_dataset(tmp_path / "code" / "c", [50, 50])
    write_dataset(tmp_path / "empty", [])
    return tmp_path


def parse_text(tmp_path, text, name="list.txt"):
    path = tmp_path / name
    path.write_text(text)
    return parse_file_list(path)


def test_text_form_normalises_weights_and_accepts_bin_suffix(datasets):
    fl = parse_text(datasets, "# a comment\n\n2 web/a.bin web\n1 web/b web  # trailing\n1 code/c code\n")
    assert [e.corpus for e in fl.entries] == ["web", "web", "code"]
    assert math.isclose(sum(e.weight for e in fl.entries), 1.0)
    assert fl.corpus_weights() == pytest.approx({"web": 0.75, "code": 0.25})
    assert [e.num_tokens for e in fl.entries] == [300, 700, 100]
    assert fl.entries[0].source.endswith("list.txt:3")


def test_toml_form_with_globs_shares_corpus_weight_by_tokens(datasets):
    path = datasets / "mix.toml"
    path.write_text('[[corpus]]\nname = "web"\nweight = 3\nfiles = ["web/*.bin"]\n\n'
                    '[[corpus]]\nname = "code"\nweight = 1\nfiles = ["code/c"]\n')
    fl = parse_file_list(path)
    weights = {e.prefix.rsplit("/", 1)[-1]: e.weight for e in fl.entries}
    assert weights == pytest.approx({"a": 0.75 * 0.3, "b": 0.75 * 0.7, "c": 0.25})


def test_yaml_form(datasets):
    path = datasets / "mix.yaml"
    path.write_text("corpus:\n  - name: web\n    weight: 1\n    files: [web/*]\n")
    fl = parse_file_list(path)
    assert len(fl) == 2 and fl.corpora == ["web"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("-1 web/a web", "must be a finite number > 0"),
        ("0 web/a web", "must be a finite number > 0"),
        ("nan web/a web", "must be a finite number > 0"),
        ("inf web/a web", "must be a finite number > 0"),
        ("abc web/a web", "is not a number"),
        ("1 web/a web extra", "expected `WEIGHT PREFIX CORPUS`"),
        ("1", "expected `WEIGHT PREFIX CORPUS`"),
        ("1 web/missing web", "not found"),
        ("1 empty web", "empty dataset"),
    ],
)
def test_each_bad_line_is_named_with_file_and_line(datasets, line, message):
    with pytest.raises(DataError) as info:
        parse_text(datasets, f"1 code/c code\n{line}\n")
    text = str(info.value)
    assert message in text and "list.txt:2" in text


def test_duplicates_and_all_problems_reported_at_once(datasets):
    with pytest.raises(DataError) as info:
        parse_text(datasets, "1 web/a web\n1 web/a.bin web\n-2 code/c code\n1 nowhere x\n")
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "list.txt:2: duplicate dataset" in text and "list.txt:1" in text
    assert "list.txt:3" in text and "list.txt:4" in text


def test_missing_bin_half_and_corrupt_index(datasets):
    (datasets / "web" / "b.bin").unlink()
    (datasets / "bad.idx").write_bytes(b"not an index at all, definitely not")
    (datasets / "bad.bin").write_bytes(b"")
    with pytest.raises(DataError) as info:
        parse_text(datasets, "1 web/b web\n1 bad web\n")
    text = str(info.value)
    assert "list.txt:1" in text and "missing" in text
    assert "list.txt:2" in text and "not a Megatron indexed dataset" in text


def test_unreadable_and_empty_lists(tmp_path):
    with pytest.raises(DataError, match="not found"):
        parse_file_list(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="cannot read"):
        parse_file_list(tmp_path / "bin.txt")
    with pytest.raises(DataError, match="no entries"):
        parse_text(tmp_path, "# only a comment\n")


def test_structured_form_errors(datasets):
    path = datasets / "bad.toml"
    path.write_text('[[corpus]]\nname = "web"\nweight = -1\nfiles = ["web/*"]\n\n'
                    '[[corpus]]\nname = "code"\nweight = 1\nfiles = ["nothing/*.bin"]\nextra = 1\n')
    with pytest.raises(DataError) as info:
        parse_file_list(path)
    text = str(info.value)
    assert "corpus 'web'" in text and "finite number > 0" in text
    assert "matches no .bin/.idx files" in text and "unknown field(s) extra" in text
    path.write_text("this is = not [toml")
    with pytest.raises(DataError, match="not valid TOML"):
        parse_file_list(path)


def test_truncated_bin_is_named_before_anything_starts(datasets):
    """A .bin cut short (a copy that stopped early) fails the list check, not the first read in training."""
    path = datasets / "web" / "b.bin"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError) as info:
        parse_text(datasets, "1 web/a web\n1 web/b web\n")
    text = str(info.value)
    assert "list.txt:2" in text and "b.bin holds 1,380 bytes but its index ends the last sequence at byte 1,400" in text
    assert "list.txt:1" not in text
