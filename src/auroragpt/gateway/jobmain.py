"""What a backend job runs: pick a free port, publish host:port, then become `auroragpt serve`.

`python -m auroragpt.gateway.jobmain --endpoint-file F --key-file K [--bind H] -- PATH [serve flags]`.
The per-job API key is read from a file only its owner can read (never a command line that `ps`
shows); the endpoint file is written atomically so the gateway never reads half of it. The host
and job id come from the launcher's own allocation reading (`runtime.scheduler`), so a batch job
names its node as the scheduler does.
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


def serve_command(serve_args: list[str], bind: str, port: int) -> list[str]:
    """The `auroragpt serve` command the job becomes (engine and model flags come from the gateway)."""
    return [sys.executable, "-m", "auroragpt.cli", "serve", *serve_args, "--host", bind, "--port", str(port)]


def where_am_i(bind: str) -> dict:
    """Host, scheduler and job id of this job, from the allocation the launcher reads (the first host
    runs the batch script); 127.0.0.1 for a local job."""
    from auroragpt.runtime.scheduler import SCHEDULER_VARIABLES, detect_allocation

    if bind == "127.0.0.1":  # a local job: whatever allocation the gateway itself runs in is not this job's
        return {"host": bind, "scheduler": "none", "job": None}
    allocation = detect_allocation()
    job = os.environ.get(SCHEDULER_VARIABLES[allocation.scheduler][0]) if allocation.scheduler != "none" else None
    return {"host": allocation.hosts[0], "scheduler": allocation.scheduler, "job": job}


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
    write_atomically(args.endpoint_file, json.dumps({**where_am_i(args.bind), "port": port, "pid": os.getpid()}))
    env = {**os.environ, "AURORAGPT_API_KEYS": key}
    os.execve(sys.executable, serve_command(serve_args, args.bind, port), env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
