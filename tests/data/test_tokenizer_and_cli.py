"""Tokenizer loading/training, the demo corpora, and the `auroragpt data` command end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from auroragpt.data import demo_corpora
from auroragpt.data.tokenizer import load_tokenizer, train_bpe
from auroragpt.errors import DataError


def test_load_from_file_and_hf_folder(tmp_path, tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    assert 257 < tok.vocab_size <= 400 and tok.eod_id == tok.token_to_id("<|endoftext|>") and tok.bos_id is None
    text = "alpha ✓ gamma\n  beta"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch([text, "x"]) == [tok.encode(text), tok.encode("x")]
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(tokenizer_path, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    assert load_tokenizer(folder).eod_id == tok.eod_id
    with pytest.raises(DataError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")


def test_train_from_files_and_large_vocab_dtype(tmp_path):
    (tmp_path / "a.txt").write_text("def f(x):\n    return x + 1\n" * 20)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hello world " * 10}) + "\n")
    tok = train_bpe([tmp_path / "a.txt", tmp_path / "b.jsonl", "extra text"], 300, tmp_path / "t")
    assert (tmp_path / "t" / "tokenizer.json").is_file() and tok.vocab_size <= 300
    from auroragpt.data.indexed import dtype_for_vocab

    assert dtype_for_vocab(tok.vocab_size) == np.uint16 and dtype_for_vocab(128_256) == np.int32
    with pytest.raises(DataError, match="too small"):
        train_bpe(["x"], 100, tmp_path / "small.json")


def test_demo_corpora_are_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_corpora, "CODE_BUDGET", 200_000)
    monkeypatch.setattr(demo_corpora, "PROSE_BUDGET", 100_000)
    first = demo_corpora.build_demo_corpora(tmp_path / "one")
    second = demo_corpora.build_demo_corpora(tmp_path / "two")
    assert set(first) == {"code", "prose"}
    for name in first:
        for a, b in zip(first[name], second[name]):
            assert a.read_bytes() == b.read_bytes()
    code = [json.loads(line) for line in first["code"][0].read_text().splitlines()]
    assert any("def " in row["text"] for row in code)
    prose = [json.loads(line)["text"] for p in first["prose"] for line in p.read_text().splitlines()]
    assert sum(map(len, prose)) >= 100_000


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auroragpt.cli", "data", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_train_tokenize_inspect_merge(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " + "word " * i}) + "\n" for i in range(30))
                      + "not json\n")
    tok = tmp_path / "tok.json"
    assert run_cli("train-tokenizer", str(corpus), "--vocab-size", "300", "--output", str(tok)).returncode == 0
    out = run_cli("tokenize", str(corpus), "--output-prefix", str(tmp_path / "ds"), "--tokenizer", str(tok),
                  "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "30 documents" in out.stdout and "c.jsonl:31" in out.stderr
    shown = run_cli("inspect", str(tmp_path / "ds"), "--document", "2", "--tokenizer", str(tok))
    assert shown.returncode == 0 and "documents   30" in shown.stdout and "document 2 word word" in shown.stdout
    merged = run_cli("merge", str(tmp_path / "ds"), str(tmp_path / "ds.bin"), "--output-prefix", str(tmp_path / "m"))
    assert merged.returncode == 0 and "60 documents" in merged.stdout
    summary = json.loads(run_cli("inspect", str(tmp_path / "m"), "--json").stdout)
    assert summary["documents"] == 60 and summary["dtype"] == "uint16"
    again = run_cli("merge", str(tmp_path / "ds"), "--output-prefix", str(tmp_path / "m"))
    assert again.returncode == 2 and "already exists" in again.stderr
