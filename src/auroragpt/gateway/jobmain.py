"""What a backend job runs: pick a free port, publish host:port, then become `auroragpt serve`.

`python -m auroragpt.gateway.jobmain --endpoint-file F --key-file K [--bind H] -- PATH [serve flags]`.
The per-job API key is read from a file only its owner can read (never a command line that `ps`
shows); the endpoint file is written atomically so the gateway never reads half of it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys


def _free_port(bind: str) -> int:
    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    from auroragpt.atomic import write_atomically

    parser = argparse.ArgumentParser(prog="auroragpt.gateway.jobmain")
    parser.add_argument("--endpoint-file", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("serve_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    serve_args = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
    with open(args.key_file, encoding="utf-8") as handle:
        key = handle.read().strip()
    port = _free_port(args.bind)
    host = "127.0.0.1" if args.bind == "127.0.0.1" else socket.gethostname()
    write_atomically(args.endpoint_file, json.dumps({"host": host, "port": port, "pid": os.getpid()}))
    env = {**os.environ, "AURORAGPT_API_KEYS": key}
    cmd = [sys.executable, "-m", "auroragpt.cli", "serve", *serve_args, "--host", args.bind, "--port", str(port)]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
