"""`auroragpt eval CKPT`: validation perplexity per corpus and/or lm-evaluation-harness tasks."""

from __future__ import annotations

import argparse
import sys

from auroragpt.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="perplexity on validation data and lm-eval tasks",
        description="Measure a checkpoint: loss and perplexity per corpus on the validation split of a "
        "data-file-list (spread over all ranks when launched with `auroragpt launch`), and/or "
        "lm-evaluation-harness tasks from local YAML files (--tasks, --include-path).",
    )
    parser.add_argument("checkpoint", help="checkpoint dir, run dir (latest checkpoint), model folder")
    parser.add_argument("--output", help="write the results as JSON here (atomically)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the rank's device)")
    ppl = parser.add_argument_group("perplexity")
    ppl.add_argument("--data-file-list", help="data-file-list whose validation split is scored")
    ppl.add_argument("--seq-len", type=int, default=None, help="tokens per sample (default: the model's max_seq_len)")
    ppl.add_argument("--num-samples", type=int, default=256,
                     help="validation samples per corpus (default 256; a smaller split is scored once, whole)")
    ppl.add_argument("--valid-fraction", type=float, default=None,
                     help="fraction of documents held out (default: the one the checkpoint was trained with)")
    ppl.add_argument("--seed", type=int, default=None, help="blend seed (default: the checkpoint's data.seed, else 1234)")
    ppl.add_argument("--micro-batch", type=int, default=8, help="samples per forward pass")
    harness = parser.add_argument_group("lm-evaluation-harness")
    harness.add_argument("--tasks", help="comma-separated task names")
    harness.add_argument("--include-path", help="folder of task YAML files (local data, works offline)")
    harness.add_argument("--include-default-tasks", action="store_true",
                         help="also index lm-eval's built-in tasks (their data is read from the local Hugging Face "
                         "cache; add --allow-network to download it)")
    harness.add_argument("--allow-network", action="store_true",
                         help="let lm-eval and Hugging Face datasets download task data and metrics "
                         "(off by default: nothing touches the network)")
    harness.add_argument("--num-fewshot", type=int, default=None)
    harness.add_argument("--limit", type=float, default=None, help="documents per task (a fraction if < 1)")
    harness.add_argument("--batch-size", type=int, default=8)
    harness.add_argument("--tokenizer", help="tokenizer.json or folder (default: the checkpoint's)")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if not args.data_file_list and not args.tasks:
        raise ConfigError("nothing to evaluate", hint="pass --data-file-list L (perplexity) and/or --tasks T (lm-eval)")
    for name in ("num_samples", "micro_batch", "batch_size"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.tasks and not args.include_path and not args.include_default_tasks:
        raise ConfigError(
            "no task source for --tasks: lm-eval's built-in tasks download their data from the Hugging Face Hub, "
            "and eval never uses the network unless asked",
            hint="pass --include-path FOLDER (task YAML files over local data), or --include-default-tasks to use "
            "the built-in tasks from the local Hugging Face cache (add --allow-network to download)")
    if args.seq_len is not None and args.seq_len <= 0:
        raise ConfigError(f"--seq-len must be positive, got {args.seq_len}")


def _training_data(meta: dict) -> dict:
    """The [data] section the checkpoint was trained with ({} when it does not record one)."""
    for source in (meta, meta.get("meta") or {}):
        data = (source.get("config") or {}).get("data") if isinstance(source, dict) else None
        if isinstance(data, dict):
            return data
    return {}


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from rich.console import Console

    from auroragpt.runtime.setup import setup, teardown
    from auroragpt.export.provenance import provenance
    from auroragpt.log import configure
    from auroragpt.model.loading import load_inference_model

    info = setup()
    configure(info.rank)
    try:
        device = args.device or info.device
        model, meta = load_inference_model(args.checkpoint, device=device)
        results: dict = {"checkpoint": str(args.checkpoint)}
        console = Console(file=sys.stdout)
        if args.data_file_list:
            from auroragpt.eval.perplexity import evaluate_perplexity, perplexity_table

            seq_len = args.seq_len or model.cfg.max_seq_len
            trained = _training_data(meta)  # score exactly the documents training held out
            seed = args.seed if args.seed is not None else trained.get("seed", 1234)
            valid_fraction = args.valid_fraction if args.valid_fraction is not None else trained.get("valid_fraction")
            if seq_len > model.cfg.max_seq_len:
                raise ConfigError(f"--seq-len {seq_len} exceeds the model's max_seq_len {model.cfg.max_seq_len}")
            results["perplexity"] = evaluate_perplexity(
                model, args.data_file_list, seq_len, args.num_samples, seed=seed,
                valid_fraction=valid_fraction, rank=info.rank, world_size=info.world_size,
                micro_batch=args.micro_batch)
            if info.rank == 0:
                console.print(perplexity_table(results["perplexity"]))
        if args.tasks and info.rank == 0:
            # The harness runs on one process; other ranks are done after perplexity.
            from auroragpt.data.tokenizer import load_tokenizer
            from auroragpt.eval.harness import harness_table, run_harness

            tokenizer_path = args.tokenizer or provenance(meta, args.checkpoint).tokenizer_path
            if tokenizer_path is None:
                raise ConfigError(f"{args.checkpoint} records no tokenizer that exists here", hint="pass --tokenizer PATH")
            tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            harness = run_harness(model, load_tokenizer(tokenizer_path), tasks, args.include_path,
                                  num_fewshot=args.num_fewshot, limit=args.limit, batch_size=args.batch_size,
                                  include_default_tasks=args.include_default_tasks,
                                  allow_network=args.allow_network,
                                  seed=args.seed if args.seed is not None else 1234)
            results["harness"] = harness
            print(harness_table(harness))
        if args.output and info.rank == 0:
            from auroragpt.eval.perplexity import write_json

            write_json(results, args.output)
    finally:
        teardown()
    return 0
