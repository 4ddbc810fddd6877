"""What a gateway batch job runs: serve's engine and batch store in-process, over one input file.

`python -m auroragpt.gateway.batchmain --input F --endpoint E --work-dir D -- PATH [serve flags]`.
The lines go through serve's own batch code (`serve.batches.BatchStore`, the live endpoint's checks
and generation), so a batch answers exactly what the live endpoint would; no HTTP server is
started. While it runs, D/progress.json holds the status and request counts; at the end
D/output.jsonl and D/errors.jsonl (when some lines failed) are written, then progress.json with
"done": true, each atomically, so the gateway reads either the old state or the finished one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

RUNNING = ("validating", "in_progress", "finalizing")
OWNER = "batch-job"


def _serve_namespace(serve_args: list[str]) -> argparse.Namespace:
    """`auroragpt serve`'s flags, parsed by serve's own parser (so batch_serve_args mean what they mean there)."""
    from auroragpt.commands.serve import register

    parser = argparse.ArgumentParser(prog="auroragpt")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *serve_args])


def _progress(batch: dict, done: bool = False) -> str:
    return json.dumps({"status": batch["status"], "request_counts": batch["request_counts"], "errors": batch["errors"],
                       "done": done})


async def run_batch(store, input_path: Path, endpoint: str, work: Path, every_s: float = 0.1) -> dict:
    """Run one input file through `store` (serve's BatchStore), publishing progress and results in `work`."""
    from auroragpt.atomic import write_atomically

    uploaded = store.add_file(input_path.read_bytes(), input_path.name, "batch", OWNER)
    batch = store.create_batch({"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": "24h"}, OWNER)
    published = None
    while batch["status"] in RUNNING:
        if (progress := _progress(batch)) != published:  # a small file, rewritten only when it changes
            write_atomically(work / "progress.json", progress)
            published = progress
        await asyncio.sleep(every_s)
    for key, name in (("output_file_id", "output.jsonl"), ("error_file_id", "errors.jsonl")):
        if batch[key]:
            write_atomically(work / name, store.file_content(batch[key], OWNER))
    write_atomically(work / "progress.json", _progress(batch, done=True))
    return batch


def main(argv: list[str] | None = None) -> int:
    from auroragpt.log import configure
    from auroragpt.serve.server import build_app

    parser = argparse.ArgumentParser(prog="auroragpt.gateway.batchmain")
    parser.add_argument("--input", required=True, help="the batch's input JSONL")
    parser.add_argument("--endpoint", required=True, help="/v1/completions or /v1/chat/completions")
    parser.add_argument("--work-dir", required=True, help="where progress.json and the result files go")
    parser.add_argument("serve_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    serve_args = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
    configure()
    work = Path(args.work_dir)
    ns = _serve_namespace(serve_args)
    ns.state_dir = str(work / "store")  # serve's store keeps its copies here; the job's folder, not /tmp
    app = build_app(ns)
    state = app.state.server
    state.engine.start()
    try:
        batch = asyncio.run(run_batch(state.store, Path(args.input), args.endpoint, work))
    finally:
        state.engine.stop()
    print(f"batch finished: {batch['status']}, {batch['request_counts']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
