"""`--engine vllm`: hand an exported Hugging Face folder to vLLM's own OpenAI-compatible server.

vLLM brings its own HTTP layer, so our hashed keys file cannot be used there: vLLM compares plain
keys, which it reads from AURORAGPT_API_KEYS (passed on as VLLM_API_KEY). Rate limits and our batch
store do not apply; this path exists for throughput on GPUs, not as a second implementation.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from auroragpt import envvars
from auroragpt.errors import ConfigError
from auroragpt.serve.server import default_model_name


def vllm_command(args: argparse.Namespace) -> list[str]:
    """The vLLM server command for our flags."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.path),
           "--host", args.host, "--port", str(args.port),
           "--served-model-name", args.model_name or default_model_name(args.path),
           "--max-num-seqs", str(args.max_batch)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.max_model_len:
        cmd += ["--max-model-len", str(args.max_model_len)]
    return cmd


def vllm_keys(args: argparse.Namespace) -> list[str]:
    """The plain keys vLLM will check (it takes one, from AURORAGPT_API_KEYS)."""
    if args.api_keys_file:
        raise ConfigError("vLLM cannot read a hashed keys file", hint="give its plain keys in AURORAGPT_API_KEYS instead")
    keys = [k.strip() for k in (envvars.read("AURORAGPT_API_KEYS") or "").split(",") if k.strip()]
    if len(keys) > 1:
        raise ConfigError("vLLM accepts a single API key", hint="set AURORAGPT_API_KEYS to one key")
    return keys


def run_vllm(args: argparse.Namespace) -> int:
    from auroragpt.model.hf_format import is_hf_folder

    keys = vllm_keys(args)  # the address rule was checked on these by the command, before the engine was chosen
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("--engine vllm needs the vllm package, which is not installed",
                          hint="pip install vllm on a GPU node, or use the default --engine native")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--engine vllm needs a GPU and none is visible", hint="use --engine native on this machine")
    if not is_hf_folder(Path(args.path)):
        raise ConfigError(f"{args.path} is not a Hugging Face folder; vLLM serves exported models",
                          hint=f"run `auroragpt export hf {args.path} OUT` and serve OUT")
    env = dict(os.environ)
    if keys:
        env["VLLM_API_KEY"] = keys[0]  # in the environment, not on a command line others can read
    return subprocess.call(vllm_command(args), env=env)
