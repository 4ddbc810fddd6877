"""`auroragpt gateway --config gateway.toml`: one OpenAI-compatible endpoint that starts model
servers as scheduler jobs on demand; `auroragpt gateway usage --config gateway.toml`: usage per key."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="serve many models through one endpoint, starting servers as Slurm/PBS/local jobs on demand",
        description="Run the gateway (default), or print the per-key usage table it recorded (`usage`).",
    )
    p.add_argument("action", nargs="?", choices=("run", "usage"), default="run")
    p.add_argument("--config", required=True, help="gateway.toml with [gateway], [[sites]] and [[models]]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auroragpt.gateway.config import load_gateway_config

    cfg = load_gateway_config(args.config)
    if args.action == "usage":
        from auroragpt.gateway.registry import Registry, usage_table

        print(usage_table(Registry.load(cfg.state_dir / "state.json")))
        return 0
    return _serve(cfg)


def _serve(cfg) -> int:
    import uvicorn

    from auroragpt.gateway.app import create_gateway_app
    from auroragpt.log import configure, get_logger
    from auroragpt.serve.auth import KeyChecker
    from auroragpt.serve.server import _check_address, require_keys_off_loopback

    configure()
    g = cfg.gateway
    keys = KeyChecker.from_sources(g.api_keys_file)
    require_keys_off_loopback(g.host, keys.enabled, g.allow_no_auth)
    _check_address(g.host, g.port)
    app = create_gateway_app(cfg, keys)
    import gc

    # What was imported and built so far (torch through serve's protocol, pydantic, fastapi: ~200k objects)
    # lives as long as the process: frozen, a full collection no longer scans it (it took 100-300 ms, a stall
    # every request in flight would have waited out).
    gc.freeze()
    get_logger(__name__).info("gateway for %s on http://%s:%d/v1", ", ".join(cfg.models), g.host, g.port)
    uvicorn.run(app, host=g.host, port=g.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
