"""Acceptance tests of `data filter`, `data decontaminate` and `data report`, driven through the CLI:
language ID on a shipped en/de/fr/es fixture, PII masking of planted e-mails and IPs, 13-gram
decontamination, Gopher/C4 rules, the report's table, PNG and data-file-list, and bad inputs."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from curate_corpus import output_digest  # noqa: E402

from auroragpt.data.curate import filters  # noqa: E402
from auroragpt.data.curate.language import identify  # noqa: E402

BIN = Path(sys.executable).parent
FIXTURE = Path(__file__).with_name("curate_langid.tsv")
WORDS = ("alpha beta gamma delta model token corpus index shard merge train layer rank node value "
         "measure sample result method energy field").split()


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "auroragpt"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def kept(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("*.jsonl")):
        if not path.name.endswith(".ledger.jsonl"):
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def ledger(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("*.ledger.jsonl")) for line in p.read_text().splitlines()]


def fixture() -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line]


def test_language_id_accuracy_on_the_fixture(tmp_path):
    rows = fixture()
    assert {lang for lang, _ in rows} == {"en", "de", "fr", "es"} and len(rows) >= 80
    accuracy = np.mean([identify(text)[0] == lang for lang, text in rows])
    assert accuracy >= 0.95, accuracy
    # through the CLI: keep German and French, remove the rest, each removal in the ledger
    src = write_jsonl(tmp_path / "mixed.jsonl", [text for _, text in rows])
    result = cli("data", "filter", str(src), "--out", str(tmp_path / "out"), "--rules", "lang", "--languages", "de,fr")
    assert result.returncode == 0, result.stderr
    got = {r["n"] for r in kept(tmp_path / "out")}
    want = {i for i, (lang, _) in enumerate(rows) if lang in ("de", "fr")}
    assert len(got ^ want) <= 0.05 * len(rows)
    assert all(e["rule"].startswith("lang:") and e["action"] == "removed" for e in ledger(tmp_path / "out"))


def _planted(rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    texts, secrets = [], []
    for i in range(400):
        found = []
        parts = list(rng.choice(WORDS, size=30))
        for _ in range(int(rng.integers(0, 4))):
            kind = rng.integers(0, 3)
            if kind == 0:
                user = "".join(rng.choice(list("abcdefghij.+_"), size=6)).strip(".") or "u"
                s = f"{user}{i}@{rng.choice(['example.com', 'anl.gov', 'mail.uni-x.de'])}"
            elif kind == 1:
                s = str(ipaddress.IPv4Address(int(rng.integers(1, 2**32 - 1))))
            else:
                s = str(ipaddress.IPv6Address(int(rng.integers(1, 2**62)) << int(rng.integers(0, 66))))
            found.append(s)
            sep = rng.choice(["", ",", ".", ")", ";"])
            parts.insert(int(rng.integers(0, len(parts))), s + sep)
        texts.append(" ".join(parts) + " version 2.3.1 on 2024-05-01.")
        secrets.append(found)
    return texts, secrets


def test_pii_masking_finds_every_planted_email_and_ip(tmp_path):
    texts, secrets = _planted(np.random.default_rng(5))
    src = write_jsonl(tmp_path / "in" / "pii.jsonl", texts)
    assert sum(map(len, secrets)) > 300
    for workers in ("1", "2"):
        result = cli("data", "filter", str(src.parent), "--out", str(tmp_path / f"w{workers}"), "--rules", "pii",
                     "--workers", workers)
        assert result.returncode == 0, result.stderr
    assert output_digest(tmp_path / "w1") == output_digest(tmp_path / "w2")
    rows = kept(tmp_path / "w1")
    assert len(rows) == len(texts)
    for row, found in zip(rows, secrets):
        for s in found:
            assert s not in row["text"], (s, row["text"])
        assert row["text"].count("<EMAIL>") + row["text"].count("<IP_ADDRESS>") == len(found), row["text"]
        assert "version 2.3.1 on 2024-05-01." in row["text"]
    masked = {e["id"]: e for e in ledger(tmp_path / "w1")}
    assert len(masked) == sum(bool(f) for f in secrets)
    assert all(e["action"] == "masked" for e in masked.values())


def test_decontamination_removes_every_document_holding_an_eval_13gram(tmp_path):
    rng = np.random.default_rng(11)
    vocab = [f"{a}{b}" for a in WORDS for b in ("", "s", "ed", "ing")]
    items = [{"question": " ".join(rng.choice(vocab, size=40)), "choices": [" ".join(rng.choice(vocab, size=15))],
              "answer": 0} for _ in range(30)]
    evals = tmp_path / "task.jsonl"
    evals.write_text("".join(json.dumps(x) + "\n" for x in items))
    texts, dirty = [], set()
    for i in range(600):
        words = list(rng.choice(vocab, size=80))
        kind = i % 3
        if kind:
            item = items[int(rng.integers(0, len(items)))]
            source = (item["question"] if rng.random() < 0.7 else item["choices"][0]).split()
            size = 13 if kind == 1 else 12
            at = int(rng.integers(0, len(source) - size + 1))
            piece = source[at:at + size]
            piece[0] = piece[0].upper() + ","  # case and punctuation do not hide an n-gram
            pos = int(rng.integers(0, 70))
            words[pos:pos] = piece
            if kind == 1:
                dirty.add(i)
        texts.append(" ".join(words))
    src = write_jsonl(tmp_path / "web.jsonl", texts)
    # what a 12-word piece alone would not reveal, a 13-gram check on the documents themselves might still
    # find by chance (random words): the truth is computed by brute force over the document's 13-grams
    eval_grams = set()
    for x in items:
        for t in (x["question"], x["choices"][0]):
            w = t.lower().split()
            eval_grams |= {tuple(w[k:k + 13]) for k in range(len(w) - 12)}
    truth = set()
    for i, t in enumerate(texts):
        w = t.lower().replace(",", " ").split()
        if any(tuple(w[k:k + 13]) in eval_grams for k in range(len(w) - 12)):
            truth.add(i)
    assert dirty <= truth and len(dirty) == 200
    result = cli("data", "decontaminate", str(src), "--against", str(evals), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    removed = set(range(600)) - {r["n"] for r in kept(tmp_path / "out")}
    assert removed == truth
    assert {e["of"] for e in ledger(tmp_path / "out")} == {"task.jsonl"}


def test_gopher_repetition_and_c4_rules():
    good = ("The committee reviewed the results of the experiment and found that the new method was more "
            "accurate than the old one. It also noted that the measurements had been taken with great care, and "
            "that the data would be shared with other groups working on the same problem. The authors thanked the "
            "technicians who built the apparatus and the students who helped with the analysis of the samples.")
    assert filters.gopher_quality(good) is None
    assert filters.gopher_repetition(good) is None
    assert filters.gopher_quality("too short to keep.")[0] == "gopher:word_count"
    assert filters.gopher_quality(" ".join(["##", "x"] * 40) + " the and")[0] in ("gopher:symbol_ratio",
                                                                                "gopher:mean_word_length")
    assert filters.gopher_quality(" ".join(WORDS * 4))[0] == "gopher:stop_words"
    assert filters.gopher_repetition("\n".join(["same line here"] * 10 + ["other"]))[0].startswith("gopher:dup_line")
    text, dropped = filters.c4_lines("A proper sentence is here.\nmenu home contact\nEnable javascript to view this page.")
    assert text == "A proper sentence is here." and dropped == pytest.approx(2 / 3)
    assert filters.c4_document("Lorem ipsum dolor sit amet. One. Two. Three.")[0] == "c4:lorem_ipsum"
    assert filters.c4_document(good) is None


def test_report_table_png_and_a_file_list_that_data_tokenize_completes(tmp_path, tokenizer_path):
    good = ("The committee reviewed the results of the experiment and found that the new method was more accurate "
            "than the old one, and that the data would be shared with the other groups working on the problem. ") * 2
    for name, texts in (("web_00", [good + str(i) for i in range(20)] + ["short"] * 5), ("arxiv_00", [good] * 3)):
        write_jsonl(tmp_path / "in" / f"{name}.jsonl", texts)
    result = cli("data", "filter", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--rules", "gopher")
    assert result.returncode == 0, result.stderr
    result = cli("data", "report", str(tmp_path / "out"), "--file-list", str(tmp_path / "list.txt"))
    assert result.returncode == 0, result.stderr
    assert "gopher:word_count" in result.stdout and "web" in result.stdout and "arxiv" in result.stdout
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"
    lines = [x.split() for x in (tmp_path / "list.txt").read_text().splitlines() if not x.startswith("#")]
    counts = {json.loads((tmp_path / "out" / f"{n}.recipe.json").read_text())["counts"]["shard"]:
              json.loads((tmp_path / "out" / f"{n}.recipe.json").read_text())["counts"]["words_kept"]
              for n in ("web_00", "arxiv_00")}
    assert {(Path(p).name, int(w)) for w, p, _ in lines} == set(counts.items())
    for _, prefix, _ in lines:
        r = cli("data", "tokenize", prefix + ".jsonl", "--output-prefix", prefix, "--tokenizer", str(tokenizer_path),
                "--workers", "1")
        assert r.returncode == 0, r.stderr
    from auroragpt.data.filelist import parse_file_list

    parsed = parse_file_list(tmp_path / "list.txt")
    assert sorted(e.corpus for e in parsed.entries) == ["arxiv", "web"]
    weights = {e.corpus: e.weight for e in parsed.entries}
    assert weights["web"] == pytest.approx(counts["web_00"] / sum(counts.values()))


@pytest.mark.parametrize("args, needle", [
    (["data", "dedup", "MISSING.jsonl", "--out", "OUT"], "input not found"),
    (["data", "dedup", "IN", "--out", "OUT", "--near", "--threshold", "1.5"], "--threshold"),
    (["data", "filter", "IN", "--out", "OUT", "--rules", "gopher,shiny"], "unknown rule(s) shiny"),
    (["data", "filter", "IN", "--out", "OUT", "--rules", "lang", "--candidate-languages", "xx"], "unknown language"),
    (["data", "filter", "IN", "--out", "OUT", "--rules", "lang", "--languages", "en,eng"],
     "--languages: unknown language code(s) eng"),
    (["data", "filter", "IN", "--out", "OUT", "--on-error", "fail"], "bad.jsonl:2"),
    (["data", "filter", "IN", "--out", "IN/bad.jsonl"], "not a folder"),
    (["data", "decontaminate", "IN", "--out", "OUT", "--against", "NOEVAL.jsonl"], "evaluation file not found"),
    (["data", "report", "IN"], "not a curation output folder"),
    (["data", "dedup", "IN", "--out", "OUT", "--workers", "0"], "--workers"),
])
def test_bad_inputs_exit_2_with_one_paragraph(tmp_path, args, needle):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    argv = [a.replace("MISSING", str(tmp_path / "missing")).replace("NOEVAL", str(tmp_path / "noeval"))
            .replace("OUT", str(tmp_path / "out")).replace("IN", str(src)) for a in args]
    result = cli(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr
    assert len([p for p in result.stderr.strip().split("\n\n") if p.strip()]) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.recipe.json"))


def test_rerun_with_other_settings_is_refused_unless_forced(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", ["one document here", "another one"])
    assert cli("data", "dedup", str(src), "--out", str(tmp_path / "out")).returncode == 0
    again = cli("data", "dedup", str(src), "--out", str(tmp_path / "out"), "--near")
    assert again.returncode == 2 and "another curation run" in again.stderr
    assert cli("data", "dedup", str(src), "--out", str(tmp_path / "out"), "--near", "--force").returncode == 0


def test_every_input_format_of_data_tokenize_is_curated(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    texts = [f"Document {i} writes to user{i}@example.org from 10.0.0.{i}." for i in range(6)]
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"text": texts[:2], "year": [2020, 2021]}), src / "a.parquet")
    with gzip.open(src / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": texts[2], "meta": {"k": 1}}) + "\n")
    (src / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((json.dumps({"text": texts[3]}) + "\n").encode()))
    (src / "d.txt").write_text(texts[4])
    write_jsonl(src / "e.jsonl", [texts[5]])
    result = cli("data", "filter", str(src), "--out", str(tmp_path / "out"), "--rules", "pii")
    assert result.returncode == 0, result.stderr
    rows = kept(tmp_path / "out")
    assert len(rows) == 6 and all("<EMAIL>" in r["text"] and "<IP_ADDRESS>" in r["text"] for r in rows)
    assert {"meta": {"k": 1}}.items() <= next(r for r in rows if "meta" in r).items()
    assert sorted(e["id"] for e in ledger(tmp_path / "out")) == ["a:1", "a:2", "b:1", "c:1", "d:1", "e:1"]
