"""`auroragpt import hf HF_DIR OUT`: a Hugging Face Llama folder as our model folder, to fine-tune."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="import a model trained elsewhere",
                                   description="Convert another ecosystem's model into an auroragpt model folder.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = formats.add_parser("hf", help="a local Hugging Face Llama folder (config.json + safetensors)",
                            description="Convert a LlamaForCausalLM folder (safetensors, sharded or not) into an "
                            "auroragpt model folder that training, eval, export and serve load.")
    hf.add_argument("hf_dir", help="local Hugging Face model folder (nothing is downloaded)")
    hf.add_argument("out", help="output model folder (written atomically)")
    hf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="weights precision in the model folder (default float32, for training)")
    hf.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    hf.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auroragpt.export.hf import import_hf
    from auroragpt.log import configure, get_logger

    configure()
    out = import_hf(args.hf_dir, args.out, dtype=args.dtype, overwrite=args.overwrite)
    get_logger("commands.import").info("wrote %s", out)
    return 0
