"""Starting the native server: load the model and tokenizer, build the engine and app, run uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

from auroragpt.errors import ConfigError
from auroragpt.log import get_logger

log = get_logger(__name__)

def _tokenizer_path(path: Path, meta: dict, override: str | None) -> Path:
    if override:
        return Path(override)
    candidates = []
    for key in ("tokenizer_path", "tokenizer"):
        for source in (meta, meta.get("meta") or {}):
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, str):
                candidates.append(Path(value) if Path(value).is_absolute() else path / value)
    candidates.append(path / "tokenizer.json")
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ConfigError(f"no tokenizer found for {path}", hint="pass --tokenizer PATH (a tokenizer.json or tokenizer folder)")


def chat_template_of(tokenizer_path: Path) -> str | None:
    """The Jinja chat template from a tokenizer_config.json next to the tokenizer, if any."""
    folder = tokenizer_path if tokenizer_path.is_dir() else tokenizer_path.parent
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text()).get("chat_template")
    except ValueError:
        return None
    return template if isinstance(template, str) else None


def load_for_serving(path: str, device: str, dtype: str | None, tokenizer: str | None = None):
    """(model, tokenizer, chat template) from a checkpoint, run dir, model folder or HF Llama folder."""
    import torch

    from auroragpt.data.tokenizer import load_tokenizer

    folder = Path(path)
    if not folder.exists():
        raise ConfigError(f"{folder} does not exist")
    from auroragpt.model.loading import load_inference_model

    model, meta = load_inference_model(folder, device="cpu")  # HF folders keep their stored precision
    model = model.to(device=device, dtype=getattr(torch, dtype) if dtype else None)
    model.reset_rotary(device)  # float32 tables, whatever the weights' precision
    tok_path = _tokenizer_path(folder, meta, tokenizer)
    tok = load_tokenizer(tok_path)
    if tok.vocab_size > model.cfg.vocab_size:
        raise ConfigError(f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model only {model.cfg.vocab_size}",
                          hint="pass the tokenizer the model was trained with (--tokenizer)")
    return model.eval(), tok, chat_template_of(tok_path)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_keys_off_loopback(host: str, has_keys: bool, allow_no_auth: bool) -> None:
    """The public-address rule, for every engine: no address other than loopback without keys
    unless the user says --allow-no-auth."""
    if not has_keys and not _is_loopback(host) and not allow_no_auth:
        raise ConfigError(f"refusing to serve on {host} without API keys",
                          hint="give --api-keys-file (lines from `auroragpt serve --hash-key KEY`) or AURORAGPT_API_KEYS, "
                          "or pass --allow-no-auth")


def _check_address(host: str, port: int) -> None:
    """A port out of range, in use, or a host that is not this machine's: one clear error."""
    import socket

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0-65535)", hint="use e.g. --port 8000")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                          hint="choose another --port (is another server running?) or a --host of this machine") from None


def default_model_name(path: str) -> str:
    """The folder's name; for RUN/checkpoints/step_N, "RUN-step_N" (the step alone names nothing)."""
    folder = Path(path).resolve()
    if folder.name.startswith("step_") and folder.parent.name == "checkpoints":
        return f"{folder.parent.parent.name}-{folder.name}"
    return folder.name


def run_server(args: argparse.Namespace) -> int:
    import uvicorn

    _check_address(args.host, args.port)  # before minutes of model loading, not after
    # The public-address rule was checked by the `serve` command, for every engine.
    app = build_app(args)
    state = app.state.server
    if not state.keys.enabled:
        log.warning("no API keys configured: every caller is accepted")
    log.info("serving %s (%s, %d slots x %d tokens) on http://%s:%d/v1", state.settings.model_name,
             args.device or "detected device", state.engine.max_batch, state.engine.max_seq_len, args.host, args.port)
    # The engine thread holds the GIL between torch calls; a shorter switch interval lets the event
    # loop hand out tokens promptly instead of waiting up to 5 ms for each turn.
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0


def build_app(args: argparse.Namespace):
    """The app for `serve`'s flags: model and tokenizer loaded, engine built (not started). Also what a
    gateway batch job drives in-process."""
    from auroragpt.runtime.device import detect_device
    from auroragpt.serve.app import ServerSettings, create_app
    from auroragpt.serve.auth import KeyChecker
    from auroragpt.serve.engine import Engine
    from auroragpt.serve.ratelimit import RateLimiter

    keys = KeyChecker.from_sources(args.api_keys_file)
    for name in ("max_batch", "max_tokens_cap", "max_body_bytes", "max_file_bytes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    device = args.device or detect_device()
    dtype = args.dtype or ("float32" if device == "cpu" else "bfloat16")
    model, tokenizer, template = load_for_serving(args.path, device, dtype, args.tokenizer)
    engine = Engine(model, tokenizer, max_batch=args.max_batch, max_seq_len=args.max_model_len)
    settings = ServerSettings(model_name=args.model_name or default_model_name(args.path),
                              max_tokens_cap=args.max_tokens_cap, max_body_bytes=args.max_body_bytes,
                              max_file_bytes=args.max_file_bytes, state_dir=args.state_dir)
    log.info("loaded %s on %s as %s", settings.model_name, device, dtype)
    return create_app(engine, tokenizer, settings, keys, RateLimiter(args.rate_limit_rps, args.rate_limit_tpm), template)
