"""`auroragpt data dedup|filter|decontaminate|report`: curation between raw corpora and `data tokenize`.

Each command works the same alone or as every rank of `auroragpt launch -n N -- auroragpt data ...`
(shard k goes to rank k % N); outputs are identical either way and a rerun resumes.
"""

from __future__ import annotations

import argparse

INPUTS_HELP = ".jsonl/.jsonl.gz/.jsonl.zst/.parquet/.txt files or folders (as for `data tokenize`)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help=INPUTS_HELP)
    p.add_argument("--out", required=True, help="output folder: LABEL.jsonl, LABEL.ledger.jsonl, LABEL.recipe.json")
    p.add_argument("--text-key", default="text", help="JSON field / parquet column holding the text")
    p.add_argument("--workers", type=int, default=1, help="worker processes per rank (default 1)")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="malformed lines: skip and count them (default) or stop at the first")
    p.add_argument("--force", action="store_true", help="replace an --out folder made by another command or settings")


def register(data_subparsers: argparse._SubParsersAction) -> None:
    p = data_subparsers.add_parser(
        "dedup", help="remove exact and near-duplicate documents",
        description="Exact duplicates by a digest of normalised text; near duplicates by MinHash + LSH with "
        "exact Jaccard verification (or an LSHBloom index). Documents are taken in input order and a "
        "document is removed when an earlier kept document duplicates it.")
    _common(p)
    p.add_argument("--exact", action="store_true", help="remove exact copies (default when --near is not given)")
    p.add_argument("--near", action="store_true", help="remove near duplicates")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard similarity of word n-gram sets")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations")
    p.add_argument("--ngram", type=int, default=3, help="words per shingle")
    p.add_argument("--seed", type=int, default=42, help="seed of the permutation family")
    p.add_argument("--bands", type=int, default=0, help="LSH bands (0: chosen from the threshold)")
    p.add_argument("--rows", type=int, default=0, help="LSH rows per band (0: chosen from the threshold)")
    p.add_argument("--index", choices=("lsh", "bloom"), default="lsh",
                   help="lsh: band tables + exact verification; bloom: LSHBloom filters, less memory, unverified")
    p.set_defaults(func=_dedup)

    p = data_subparsers.add_parser(
        "filter", help="quality, language and PII rules",
        description="Apply rules in the order given: gopher (quality + stop words), repetition (Gopher), "
        "stopwords, c4 (line and page rules), lang (offline langid), pii (mask e-mails, IPs, phone numbers).")
    _common(p)
    p.add_argument("--rules", default="gopher,repetition,lang,pii", help="comma-separated, applied in order")
    p.add_argument("--languages", default="en", help="languages to keep (ISO 639-1, comma-separated)")
    p.add_argument("--min-lang-score", type=float, default=0.5, help="least langid probability to keep")
    p.add_argument("--candidate-languages", default="", help="restrict langid to these languages (comma-separated)")
    p.set_defaults(func=_filter)

    p = data_subparsers.add_parser(
        "decontaminate", help="remove documents sharing long n-grams with evaluation sets",
        description="Remove every document that shares a word n-gram (13 by default) with the evaluation "
        "files (lm-eval style .jsonl: every string field counts; .json; .txt).")
    _common(p)
    p.add_argument("--against", nargs="+", required=True, help="evaluation files")
    p.add_argument("--ngram", type=int, default=13)
    p.set_defaults(func=_decontaminate)

    p = data_subparsers.add_parser(
        "report", help="summarise a curation folder (table, PNG, data-file-list)",
        description="Kept and removed words per rule and per corpus from the recipes and ledgers of a "
        "curation --out folder.")
    p.add_argument("dir", help="the --out folder of dedup, filter or decontaminate")
    p.add_argument("--png", default=None, help="chart path (default DIR/report.png)")
    p.add_argument("--file-list", default=None, help="write a data-file-list weighted by kept words here")
    p.add_argument("--prefix-root", default=None, help="folder of the tokenized datasets in --file-list (default DIR)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_report)


def _check_common(args: argparse.Namespace) -> None:
    from auroragpt.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")


def _run(args: argparse.Namespace, work) -> int:  # noqa: ANN001 (a closure over the command)
    import time

    from auroragpt.data.curate.runner import Ranks

    _check_common(args)
    started = time.monotonic()
    ranks = Ranks.from_launcher()
    try:
        counts = work(ranks)
    finally:
        ranks.close()
    if ranks.rank == 0:
        docs = sum(c["documents"] for c in counts)
        kept = sum(c["kept"] for c in counts)
        bad = sum(c["malformed"] for c in counts)
        print(f"{args.out}: {len(counts)} shard(s), {docs:,} documents, {kept:,} kept, {docs - kept:,} removed"
              + (f", {bad:,} malformed lines skipped" if bad else "")
              + f" in {time.monotonic() - started:.1f} s (ranks {ranks.world_size}, workers {args.workers})")
    return 0


def _dedup(args: argparse.Namespace) -> int:
    from auroragpt.data.curate.dedup import dedup
    from auroragpt.data.curate.minhash import MinHashSettings

    exact = args.exact or not args.near
    settings = MinHashSettings(num_perm=args.num_perm, ngram=args.ngram, seed=args.seed, threshold=args.threshold,
                               bands=args.bands, rows=args.rows)
    return _run(args, lambda ranks: dedup(
        args.inputs, args.out, exact=exact, near=args.near, minhash=settings, index=args.index,
        text_key=args.text_key, workers=args.workers, on_error=args.on_error, force=args.force, ranks=ranks))


def _split(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _filter(args: argparse.Namespace) -> int:
    from auroragpt.data.curate.perdoc import RULES, apply_rules, run_document_pass
    from auroragpt.errors import ConfigError

    rules = _split(args.rules)
    unknown = [r for r in rules if r not in RULES]
    if not rules or unknown:
        raise ConfigError(f"--rules: unknown rule(s) {', '.join(unknown) or '(none given)'}",
                          hint=f"choose from {', '.join(RULES)}")
    languages, candidates = _split(args.languages), _split(args.candidate_languages)
    if "lang" in rules:
        from auroragpt.data.curate.language import check_languages

        check_languages(languages, "--languages")
        check_languages(candidates, "--candidate-languages")
    settings = {"rules": list(rules), "languages": list(languages), "min_lang_score": args.min_lang_score,
                "candidate_languages": list(candidates)}
    process_args = (rules, languages, args.min_lang_score, candidates)
    return _run(args, lambda ranks: run_document_pass(
        "filter", args.inputs, args.out, settings, apply_rules, process_args, text_key=args.text_key,
        workers=args.workers, on_error=args.on_error, force=args.force, ranks=ranks))


def _decontaminate(args: argparse.Namespace) -> int:
    from auroragpt.data.curate.decontaminate import contaminated, eval_ngrams
    from auroragpt.data.curate.perdoc import run_document_pass
    from auroragpt.data.curate.shards import input_id
    from auroragpt.errors import ConfigError

    if args.ngram < 1:
        raise ConfigError(f"--ngram must be at least 1, got {args.ngram}")
    table, owners, names = eval_ngrams(args.against, args.ngram)
    settings = {"ngram": args.ngram, "against": [input_id(p) for p in args.against]}
    return _run(args, lambda ranks: run_document_pass(
        "decontaminate", args.inputs, args.out, settings, contaminated, (table, owners, names, args.ngram),
        text_key=args.text_key, workers=args.workers, on_error=args.on_error, force=args.force, ranks=ranks))


def _report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from auroragpt.data.curate.report import print_tables, summarize, write_file_list, write_png

    summary = summarize(args.dir)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "shards"}, indent=1))
    else:
        print_tables(summary, args.dir)
    png = write_png(summary, args.png or Path(args.dir) / "report.png")
    print(f"chart: {png}")
    if args.file_list:
        print(f"data-file-list: {write_file_list(summary, args.dir, args.file_list, args.prefix_root)}")
    return 0
