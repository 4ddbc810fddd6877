"""`auroragpt data ...`: train tokenizers, tokenize corpora, inspect and merge indexed datasets.

Arguments are parsed here; the work lives in `auroragpt.data`.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="prepare training data (tokenizers, indexed datasets, blends)",
        description="Turn corpora into Megatron-compatible indexed datasets (PREFIX.bin + PREFIX.idx).",
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    p = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer on local text",
                       description="Train a byte-level BPE (Hugging Face tokenizers) with <|endoftext|> as the "
                       "end-of-document token and save tokenizer.json.")
    p.add_argument("inputs", nargs="+", help=".jsonl/.jsonl.gz/.jsonl.zst/.parquet/.txt files or folders")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--output", required=True, help="tokenizer.json path (or a folder to hold one)")
    p.add_argument("--text-key", default="text", help="JSON field / parquet column holding the text")
    p.add_argument("--min-frequency", type=int, default=2, help="least count for a merge")
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser("tokenize", help="tokenize corpora into indexed datasets",
                       description="Tokenize corpora in parallel. Each document gets the end-of-document token. "
                       "A rerun after an interruption reuses the outputs already finished.")
    p.add_argument("inputs", nargs="+", help=".jsonl/.jsonl.gz/.jsonl.zst/.parquet/.txt files or folders")
    p.add_argument("--output-prefix", required=True, help="PREFIX of the dataset (PREFIX_<input> with --per-input)")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json or a local Hugging Face tokenizer folder")
    p.add_argument("--text-key", default="text", help="JSON field / parquet column holding the text")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--per-input", action="store_true", help="one dataset per input file instead of one merged")
    p.add_argument("--shuffle-seed", type=int, default=None, help="write documents in a seeded random order")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="malformed lines: skip and report them (default) or stop at the first")
    p.add_argument("--chunk-mb", type=float, default=1.0, help="MB of input per worker task")
    p.add_argument("--force", action="store_true",
                   help="replace outputs (and discard unfinished work) made from other inputs or settings")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    p.add_argument("--format", choices=("text", "chat", "completion", "preference"), default="text",
                   help="text documents (default), or post-training records written with a loss-mask sidecar")
    p.add_argument("--chat-template", default="default",
                   help="for chat/completion/preference: 'default', 'hf' (the tokenizer folder's) or a .jinja file")
    p.set_defaults(func=_tokenize)

    p = sub.add_parser("inspect", help="counts, length percentiles and a decoded document",
                       description="Summarize an indexed dataset; with --document K, decode document K.")
    p.add_argument("prefix", help="dataset PREFIX (or PREFIX.bin / PREFIX.idx)")
    p.add_argument("--document", type=int, default=None, help="print the text (or tokens) of this document")
    p.add_argument("--tokenizer", default=None, help="tokenizer to decode --document with")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("merge", help="concatenate indexed datasets without re-tokenizing")
    p.add_argument("inputs", nargs="+", help="dataset prefixes, in order")
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--shuffle-seed", type=int, default=None, help="write documents in a seeded random order")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_merge)

    p = sub.add_parser("demo-corpora", help="write code/prose corpora from the Python standard library",
                       description="Write code_XX.jsonl (stdlib source) and prose_XX.jsonl (pydoc topics and "
                       "docstrings) under OUT_DIR; nothing is downloaded.")
    p.add_argument("out_dir")
    p.set_defaults(func=_demo_corpora)

    from auroragpt.commands import data_blend, data_curate

    data_blend.register(sub)
    data_curate.register(sub)


def _configure_logging() -> None:
    from auroragpt.log import configure

    configure(0)


def _train_tokenizer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auroragpt.data.tokenizer import train_bpe

    _configure_logging()
    tok = train_bpe([Path(x) for x in args.inputs], args.vocab_size, args.output,
                    text_key=args.text_key, min_frequency=args.min_frequency)
    print(f"wrote {tok.path} (vocab {tok.vocab_size}, end of document id {tok.eod_id})")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from auroragpt.data.tokenize import tokenize_corpora

    _configure_logging()
    result = tokenize_corpora(
        args.inputs, args.output_prefix, args.tokenizer, text_key=args.text_key, workers=args.workers,
        per_input=args.per_input, shuffle_seed=args.shuffle_seed, on_error=args.on_error,
        chunk_bytes=max(4096, int(args.chunk_mb * (1 << 20))), progress=args.progress, force=args.force,
        fmt=args.format, chat_template=args.chat_template,
    )
    rate = result.bytes_read / max(result.seconds, 1e-9) / 1e6
    print(f"{len(result.outputs)} dataset(s): {', '.join(result.outputs)}")
    print(f"{result.documents:,} documents, {result.tokens:,} tokens, {result.bytes_read / 1e6:.1f} MB "
          f"in {result.seconds:.1f} s ({rate:.1f} MB/s)"
          + (f"; reused {len(result.reused)} finished input(s)" if result.reused else ""))
    if result.errors.count:
        print(result.errors.summary(), file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from auroragpt.data.inspect import dataset_summary, document_tokens, format_summary

    summary = dataset_summary(args.prefix)
    if args.document is not None:
        tokens = document_tokens(args.prefix, args.document)
        summary["document"] = {"index": args.document, "tokens": int(tokens.size)}
        if args.tokenizer:
            from auroragpt.data.tokenizer import load_tokenizer

            summary["document"]["text"] = load_tokenizer(args.tokenizer).decode(tokens.tolist())
        else:
            summary["document"]["ids"] = tokens.tolist()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(format_summary(summary))
    if "document" in summary:
        doc = summary["document"]
        print(f"--- document {doc['index']} ({doc['tokens']} tokens) ---")
        print(doc.get("text", doc.get("ids")))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from auroragpt.data.merge import merge_datasets

    ds = merge_datasets(args.inputs, args.output_prefix, shuffle_seed=args.shuffle_seed, overwrite=args.force)
    print(f"wrote {ds.prefix}: {ds.num_documents:,} documents, {ds.num_tokens:,} tokens")
    return 0


def _demo_corpora(args: argparse.Namespace) -> int:
    from auroragpt.data.demo_corpora import build_demo_corpora

    corpora = build_demo_corpora(args.out_dir)
    for name, paths in corpora.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0
