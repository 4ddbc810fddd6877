"""`auroragpt data blend LIST --seq-len S --tokens T`: build a blend plan and report what it does."""

from __future__ import annotations

import argparse


def register(data_subparsers: argparse._SubParsersAction) -> None:
    p = data_subparsers.add_parser(
        "blend",
        help="build the blend plan of a data-file-list and print the achieved mix",
        description="Build the blend plan for a data-file-list (WEIGHT PREFIX CORPUS lines, or TOML/YAML "
        "corpora with globs) and print the achieved mix per corpus, epochs per corpus, build time and memory.",
    )
    p.add_argument("file_list", metavar="LIST", help="the data-file-list")
    p.add_argument("--seq-len", type=int, required=True, help="sequence length S (samples hold S+1 tokens)")
    p.add_argument("--tokens", type=float, required=True, help="training tokens (e.g. 2e12)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--split", choices=("train", "valid"), default="train")
    p.add_argument("--valid-fraction", type=float, default=0.01, help="share of each file's documents held out")
    p.add_argument("--show", type=int, default=None, metavar="K", help="print the spans and text of sample K")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder to decode --show with")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    import resource
    import time

    from rich.console import Console
    from rich.table import Table

    from auroragpt.data.blend import build_blend_plan
    from auroragpt.data.filelist import parse_file_list
    from auroragpt.errors import ConfigError

    if args.seq_len < 1 or not args.tokens >= 1:
        raise ConfigError("--seq-len and --tokens must be positive")
    started = time.perf_counter()
    file_list = parse_file_list(args.file_list)
    num_samples = math.ceil(args.tokens / args.seq_len)
    plan = build_blend_plan(file_list, args.seq_len, num_samples, args.seed, args.split, args.valid_fraction)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    console = Console()
    table = Table(title=f"blend of {file_list.path}: {num_samples:,} samples of {args.seq_len + 1} tokens ({args.split})")
    for name in ("corpus", "files", "tokens", "weight", "achieved", "samples", "epochs"):
        table.add_column(name, justify="left" if name == "corpus" else "right")
    for s in plan.summary():
        table.add_row(
            s.name, f"{s.files:,}", f"{s.tokens:,}", f"{s.weight:.6f}", f"{s.samples / num_samples:.6f}",
            f"{s.samples:,}", f"{s.epochs:.3f}",
        )
    console.print(table)
    console.print(
        f"{len(file_list):,} files, {file_list.num_tokens:,} tokens; plan built in {elapsed:.3f} s "
        f"(plan arrays {plan.memory_bytes() / 2**20:.2f} MiB, process peak RSS {peak_mib:.0f} MiB)"
    )
    if args.show is not None:
        _show(console, plan, args.show, args.tokenizer)
    return 0


def _show(console, plan, k: int, tokenizer_path: str | None) -> None:  # noqa: ANN001 (rich, plan)
    from auroragpt.errors import ConfigError

    if not 0 <= k < len(plan):
        raise ConfigError(f"--show {k} is outside the plan's {len(plan):,} samples")
    console.print(f"sample {k} (corpus {plan.corpus_of(k)}):")
    for f, doc, offset, length in plan.spans(k):
        console.print(f"  {plan.file_list.entries[f].prefix}  document {doc}  tokens {offset}..{offset + length}")
    tokens = plan.sample(k)
    if tokenizer_path:
        from auroragpt.data.tokenizer import load_tokenizer

        console.print(load_tokenizer(tokenizer_path).decode(tokens.tolist()), markup=False, highlight=False)
    else:
        console.print(f"  token ids: {tokens.tolist()}", markup=False, highlight=False)
