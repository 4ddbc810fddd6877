"""Tokenizing every input format, malformed lines, worker-count independence, shuffling, restart."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import zstandard

from auroragpt.data.indexed import IndexedDataset
from auroragpt.data.readers import ReadErrors, iter_texts
from auroragpt.data.tokenize import tokenize_corpora
from auroragpt.data.tokenizer import load_tokenizer
from auroragpt.errors import DataError


WORDS = "alpha beta gamma delta tensor token corpus é ✓ \n".split(" ")


def texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def jsonl(rows: list[str]) -> bytes:
    return "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(rows)).encode()


@pytest.fixture
def corpus(tmp_path):
    """One file per format; returns (folder, {file name: its texts in order})."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    expected = {}
    expected["a.jsonl"] = texts(1, 40)
    (folder / "a.jsonl").write_bytes(jsonl(expected["a.jsonl"]))
    expected["b.jsonl.gz"] = texts(2, 30)
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(expected["b.jsonl.gz"])))
    expected["c.jsonl.zst"] = texts(3, 30)
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(expected["c.jsonl.zst"])))
    expected["d.parquet"] = texts(4, 25)
    pq.write_table(pa.table({"text": expected["d.parquet"]}), folder / "d.parquet", row_group_size=7)
    expected["sub/e.txt"] = [texts(5, 1)[0] + "\nsecond line ✓"]
    (folder / "sub" / "e.txt").write_text(expected["sub/e.txt"][0], encoding="utf-8")
    (folder / "ignored.csv").write_text("not read")
    return folder, expected


def documents(prefix) -> list[np.ndarray]:
    ds = IndexedDataset(prefix)
    return [np.array(ds.get(i)) for i in range(len(ds))]


def test_every_format_tokenizes_with_end_of_document(tmp_path, corpus, tokenizer_path):
    folder, expected = corpus
    tok = load_tokenizer(tokenizer_path)
    result = tokenize_corpora([folder], tmp_path / "out", tokenizer_path, workers=1, progress=False)
    all_texts = [t for name in sorted(expected) for t in expected[name]]
    docs = documents(tmp_path / "out")
    assert result.documents == len(all_texts) == len(docs)
    for text, doc in zip(all_texts, docs):
        assert doc[-1] == tok.eod_id
        assert doc[:-1].tolist() == tok.encode(text)
        assert tok.decode(doc[:-1]) == text
    assert IndexedDataset(tmp_path / "out").dtype == np.uint16
    assert not (tmp_path / "out.parts").exists()


def test_per_input_outputs_and_worker_count_independence(tmp_path, corpus, tokenizer_path):
    folder, expected = corpus
    one = tokenize_corpora([folder], tmp_path / "w1", tokenizer_path, workers=1, per_input=True, chunk_bytes=512)
    two = tokenize_corpora([folder], tmp_path / "w2", tokenizer_path, workers=2, per_input=True, chunk_bytes=512)
    assert [o.rsplit("_", 1)[-1] for o in one.outputs] == ["a", "b", "c", "d", "e"]
    for a, b in zip(one.outputs, two.outputs):
        for suffix in (".bin", ".idx"):
            assert open(a + suffix, "rb").read() == open(b + suffix, "rb").read()
    assert len(documents(one.outputs[3])) == len(expected["d.parquet"])


def test_malformed_lines_are_counted_with_locations(tmp_path, tokenizer_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{broken\n\n{"other": 1}\n{"text": 5}\n[1, 2]\n{"text": "also fine"}\n')
    result = tokenize_corpora([bad], tmp_path / "out", tokenizer_path, workers=1)
    assert result.documents == 2
    assert result.errors.count == 4
    assert [loc.split(": ")[0].rsplit(":", 1)[-1] for loc in result.errors.locations] == ["2", "4", "5", "6"]
    assert all(loc.startswith(str(bad)) for loc in result.errors.locations)
    with pytest.raises(DataError, match="bad.jsonl:2"):
        tokenize_corpora([bad], tmp_path / "strict", tokenizer_path, workers=1, on_error="fail")
    assert not list(tmp_path.glob("strict*.idx")) and not list(tmp_path.glob("strict.parts/*.idx"))
    with pytest.raises(DataError, match="bad.jsonl:2") as info:  # raised in a worker process
        tokenize_corpora([bad], tmp_path / "strict2", tokenizer_path, workers=2, on_error="fail")
    assert info.value.hint and "--on-error=skip" in info.value.hint
    assert not [p for p in tmp_path.rglob("strict2*") if p.is_file()]
    errors = ReadErrors()
    assert list(iter_texts(bad, errors=errors)) == ["fine", "also fine"] and errors.count == 4


def test_missing_parquet_column_and_bad_inputs(tmp_path, tokenizer_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="no column 'text'"):
        tokenize_corpora([tmp_path / "p.parquet"], tmp_path / "out", tokenizer_path, workers=1)
    assert tokenize_corpora([tmp_path / "p.parquet"], tmp_path / "ok", tokenizer_path, workers=1,
                            text_key="body").documents == 1
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="not text"):
        tokenize_corpora([tmp_path / "n.parquet"], tmp_path / "out", tokenizer_path, workers=1)
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(jsonl(texts(9, 2000)))[:-200])
    with pytest.raises(DataError, match="t.jsonl.gz: cannot decompress"):
        tokenize_corpora([tmp_path / "t.jsonl.gz"], tmp_path / "out", tokenizer_path, workers=2)
    assert not list(tmp_path.glob("out*.idx")) and not list(tmp_path.glob("out.parts/*"))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="unsupported input format"):
        tokenize_corpora([tmp_path / "x.csv"], tmp_path / "out", tokenizer_path)
    with pytest.raises(DataError, match="tokenizer not found"):
        tokenize_corpora([tmp_path / "p.parquet"], tmp_path / "out", tmp_path / "nope.json")


def test_shuffle_is_seeded_permutation_and_restart_reuses_outputs(tmp_path, corpus, tokenizer_path):
    folder, _ = corpus
    plain = documents(tokenize_corpora([folder], tmp_path / "plain", tokenizer_path, workers=1).outputs[0])
    s1 = documents(tokenize_corpora([folder], tmp_path / "s1", tokenizer_path, workers=1, shuffle_seed=7).outputs[0])
    s2 = documents(tokenize_corpora([folder], tmp_path / "s2", tokenizer_path, workers=1, shuffle_seed=7).outputs[0])
    assert [d.tolist() for d in s1] == [d.tolist() for d in s2]
    assert [d.tolist() for d in s1] != [d.tolist() for d in plain]
    assert sorted(d.tolist() for d in s1) == sorted(d.tolist() for d in plain)
    again = tokenize_corpora([folder], tmp_path / "plain", tokenizer_path, workers=1)
    assert again.documents == 0 and len(again.reused) == 5
    per = tokenize_corpora([folder], tmp_path / "per", tokenizer_path, workers=1, per_input=True)
    (tmp_path / "per_c.idx").unlink()
    redo = tokenize_corpora([folder], tmp_path / "per", tokenizer_path, workers=1, per_input=True)
    assert redo.reused and len(redo.reused) == 4 and redo.documents == 30
    assert per.outputs == redo.outputs


def test_existing_output_is_reused_only_for_the_same_recipe(tmp_path, tokenizer_path):
    """Rerunning the same command is a no-op; other inputs or another tokenizer into an existing
    prefix are refused (never silently kept) until --force replaces them."""
    from auroragpt.data.tokenizer import train_bpe

    (tmp_path / "a.jsonl").write_bytes(jsonl(texts(1, 5)))
    (tmp_path / "b.jsonl").write_bytes(jsonl(texts(2, 7)))
    out = tmp_path / "out"
    assert tokenize_corpora([tmp_path / "a.jsonl"], out, tokenizer_path, workers=1).documents == 5
    again = tokenize_corpora([tmp_path / "a.jsonl"], out, tokenizer_path, workers=1)
    assert again.documents == 0 and again.reused == [str(tmp_path / "a.jsonl")]
    with pytest.raises(DataError, match="already exist, but were made from other inputs") as err:
        tokenize_corpora([tmp_path / "b.jsonl"], out, tokenizer_path, workers=1)
    assert "--force" in err.value.hint
    assert len(documents(out)) == 5
    other_tok = train_bpe(texts(3, 50), 300, tmp_path / "other.json").path
    with pytest.raises(DataError, match="already exist"):
        tokenize_corpora([tmp_path / "a.jsonl"], out, other_tok, workers=1)
    assert tokenize_corpora([tmp_path / "b.jsonl"], out, tokenizer_path, workers=1, force=True).documents == 7
    assert len(documents(out)) == 7
    per = tmp_path / "per"
    tokenize_corpora([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], per, tokenizer_path, workers=1, per_input=True)
    (tmp_path / "b.jsonl").write_bytes(jsonl(texts(2, 8)))  # an input that changed since
    with pytest.raises(DataError, match="per_b.bin/.idx already exist"):
        tokenize_corpora([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], per, tokenizer_path, workers=1, per_input=True)


def test_unfinished_parts_of_another_run_are_not_mixed_in(tmp_path, tokenizer_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl(texts(1, 5)))
    (tmp_path / "b.jsonl").write_bytes(jsonl(texts(2, 7)))
    out = tmp_path / "out"
    tokenize_corpora([tmp_path / "a.jsonl"], tmp_path / "donor", tokenizer_path, workers=1)
    parts = tmp_path / "out.parts"  # as if a run over a.jsonl had been killed after its first input
    parts.mkdir()
    for suffix in (".bin", ".idx"):
        (parts / f"00000_a{suffix}").write_bytes((tmp_path / f"donor{suffix}").read_bytes())
    (parts / "recipe.json").write_text('{"inputs": []}')
    with pytest.raises(DataError, match="out.parts holds the unfinished work of an earlier run"):
        tokenize_corpora([tmp_path / "b.jsonl", tmp_path / "a.jsonl"], out, tokenizer_path, workers=1)
    result = tokenize_corpora([tmp_path / "b.jsonl", tmp_path / "a.jsonl"], out, tokenizer_path, workers=1, force=True)
    assert result.documents == 12 and len(documents(out)) == 12 and not parts.exists()


def test_zstd_with_several_frames_and_a_truncated_one(tmp_path, tokenizer_path):
    rows_a, rows_b = texts(4, 40), texts(5, 3000)
    frames = zstandard.ZstdCompressor().compress(jsonl(rows_a)) + zstandard.ZstdCompressor().compress(jsonl(rows_b))
    (tmp_path / "multi.jsonl.zst").write_bytes(frames)
    assert tokenize_corpora([tmp_path / "multi.jsonl.zst"], tmp_path / "m", tokenizer_path, workers=1).documents == 3040
    (tmp_path / "cut.jsonl.zst").write_bytes(frames[: len(frames) - 100])  # cut inside the second frame
    with pytest.raises(DataError, match="cut.jsonl.zst: cannot decompress after line .*ends inside a zstd frame"):
        tokenize_corpora([tmp_path / "cut.jsonl.zst"], tmp_path / "c", tokenizer_path, workers=2)
    assert not list(tmp_path.glob("c.*"))
    (tmp_path / "empty.jsonl.zst").write_bytes(b"")
    assert tokenize_corpora([tmp_path / "empty.jsonl.zst"], tmp_path / "e", tokenizer_path, workers=1).documents == 0
