"""`auroragpt serve CKPT_OR_HF_DIR`: an OpenAI-compatible endpoint for a checkpoint or model folder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a checkpoint through an OpenAI-compatible HTTP API",
        description="Serve a training checkpoint, run directory, model folder or Hugging Face Llama folder "
        "through an OpenAI-compatible API (completions, chat, streaming, batches) with API keys and rate limits.",
    )
    p.add_argument("path", nargs="?", help="checkpoint dir, run dir, auroragpt model folder or HF Llama folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-keys-file", help="file with one SHA-256 hex digest of an accepted key per line")
    p.add_argument("--hash-key", metavar="KEY", help="print the keys-file line for KEY and exit")
    p.add_argument("--allow-no-auth", action="store_true",
                   help="serve without API keys on an address other than 127.0.0.1 (not recommended)")
    p.add_argument("--engine", choices=("native", "vllm"), default="native",
                   help="native: our continuous-batching engine; vllm: hand a HF folder to vLLM (needs vllm and a GPU)")
    p.add_argument("--model-name", help="model id reported by /v1/models (default: the folder name; RUN-step_N for a checkpoint step)")
    p.add_argument("--tokenizer", help="tokenizer.json or tokenizer folder (default: the one in the model folder)")
    p.add_argument("--device", default=None, help="cpu, cuda, xpu, ... (default: detected)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "float64"), default=None,
                   help="weights and KV cache precision (default: float32 on CPU, bfloat16 on accelerators)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model's math (default: torch's; on a small CPU, leaving one core to the "
                   "HTTP loop and the clients often helps)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (KV cache slots)")
    p.add_argument("--max-model-len", type=int, default=None, help="cap on prompt + completion tokens (default: model's)")
    p.add_argument("--max-tokens-cap", type=int, default=1024, help="largest max_tokens a request may ask for")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest JSON request body")
    p.add_argument("--max-file-bytes", type=int, default=64 << 20, help="largest uploaded batch file")
    p.add_argument("--rate-limit-rps", type=float, default=0.0, help="requests per second per key (0 = no limit)")
    p.add_argument("--rate-limit-tpm", type=float, default=0.0, help="prompt + max tokens per minute per key (0 = no limit)")
    p.add_argument("--state-dir", help="where uploaded files and batch results live (default: a temporary folder)")
    p.set_defaults(func=run)


def _check_public_address(args: argparse.Namespace) -> None:
    """No public address without keys, whichever engine serves (checked before choosing one)."""
    from auroragpt.serve.auth import KeyChecker
    from auroragpt.serve.server import require_keys_off_loopback
    from auroragpt.serve.vllm_engine import vllm_keys

    has_keys = bool(vllm_keys(args)) if args.engine == "vllm" else KeyChecker.from_sources(args.api_keys_file).enabled
    require_keys_off_loopback(args.host, has_keys, args.allow_no_auth)


def run(args: argparse.Namespace) -> int:
    from auroragpt.errors import ConfigError
    from auroragpt.log import configure
    from auroragpt.serve.auth import hash_key

    if args.hash_key is not None:
        print(hash_key(args.hash_key))
        return 0
    if not args.path:
        raise ConfigError("serve needs a checkpoint, model folder or HF folder", hint="auroragpt serve PATH [--port 8000]")
    configure()
    _check_public_address(args)
    if args.engine == "vllm":
        from auroragpt.serve.vllm_engine import run_vllm

        return run_vllm(args)
    from auroragpt.serve.server import run_server

    return run_server(args)
