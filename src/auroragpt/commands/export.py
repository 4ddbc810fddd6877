"""`auroragpt export hf CKPT OUT`: a checkpoint as a Hugging Face LlamaForCausalLM folder."""

from __future__ import annotations

import argparse
import re

from auroragpt.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """'5GB', '500MiB' or a plain byte count -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ConfigError(f"cannot read size {text!r}", hint="write it like 5GB, 500MB or 2GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise ConfigError(f"size {text!r} must be positive")
    return size


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint to another format",
                                   description="Export a checkpoint, run directory or model folder to another ecosystem's format.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = formats.add_parser("hf", help="Hugging Face LlamaForCausalLM folder (safetensors, tokenizer, model card)",
                            description="Write a folder that transformers.AutoModelForCausalLM.from_pretrained loads.")
    hf.add_argument("checkpoint", help="checkpoint dir, run dir (latest checkpoint) or auroragpt model folder")
    hf.add_argument("out", help="output folder (written under a temporary name, renamed when complete)")
    hf.add_argument("--tokenizer", help="tokenizer.json or tokenizer folder (default: the checkpoint's)")
    hf.add_argument("--no-tokenizer", action="store_true", help="export weights and config only")
    hf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                    help="weights precision (default: the checkpoint's)")
    hf.add_argument("--max-shard-size", default="5GB", help="split model.safetensors above this size (default 5GB)")
    hf.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    hf.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auroragpt.export.hf import export_hf
    from auroragpt.export.provenance import provenance
    from auroragpt.log import configure, get_logger
    from auroragpt.model.loading import load_inference_model

    configure()
    max_shard = parse_size(args.max_shard_size)
    model, meta = load_inference_model(args.checkpoint)
    origin = provenance(meta, args.checkpoint)
    tokenizer = None if args.no_tokenizer else (args.tokenizer or origin.tokenizer_path)
    if tokenizer is None and not args.no_tokenizer:
        raise ConfigError(f"{args.checkpoint} does not record a tokenizer that exists on this machine",
                          hint="pass --tokenizer PATH (tokenizer.json or folder), or --no-tokenizer for weights only")
    out = export_hf(model, args.out, meta=origin.card_meta(), tokenizer_path=tokenizer, dtype=args.dtype,
                    max_shard_bytes=max_shard, overwrite=args.overwrite)
    get_logger("commands.export").info("wrote %s", out)
    return 0
