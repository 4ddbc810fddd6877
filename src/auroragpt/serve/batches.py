"""Files and batch jobs as OpenAI's Files and Batch APIs describe them.

A batch's input is a JSONL file of {"custom_id", "method": "POST", "url", "body"} lines; the job
runs every line through the same code as the live endpoint and writes an output file (one
{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"} line per request)
and, when some lines failed, an error file in the same shape. Files live in a state folder, each
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

from auroragpt.atomic import write_atomically
from auroragpt.log import get_logger
from auroragpt.serve.protocol import APIError, parse_json

log = get_logger(__name__)

BATCH_ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
# (endpoint, body, api key id) -> (HTTP status, response body)
RunOne = Callable[[str, dict, str], Awaitable[tuple[int, dict]]]


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes). Uses the stdlib parser."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise APIError(400, "upload the file as multipart/form-data with fields 'file' and 'purpose'")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise APIError(400, "malformed multipart body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class BatchStore:
    """Uploaded files and batch jobs, owned by one API key each."""

    def __init__(self, state_dir: str | os.PathLike, run_one: RunOne, concurrency: int = 8) -> None:
        self.dir = Path(state_dir)
        (self.dir / "files").mkdir(parents=True, exist_ok=True)
        self.run_one = run_one
        self.concurrency = concurrency
        self.files: dict[str, dict] = {}
        self.owners: dict[str, str] = {}
        self.batches: dict[str, dict] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    # ---- files ------------------------------------------------------------------------------

    def add_file(self, data: bytes, filename: str, purpose: str, owner: str, fid: str | None = None) -> dict:
        fid = fid or f"file-{uuid.uuid4().hex[:24]}"
        write_atomically(self.dir / "files" / fid, data)
        info = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "status_details": None}
        self.files[fid], self.owners[fid] = info, owner
        return info

    def get_file(self, fid: str, owner: str) -> dict:
        if fid not in self.files or self.owners[fid] != owner:
            raise APIError(404, f"no such file: {fid}", param="file_id", code="not_found")
        return self.files[fid]

    def file_content(self, fid: str, owner: str) -> bytes:
        self.get_file(fid, owner)
        return (self.dir / "files" / fid).read_bytes()

    def list_files(self, owner: str, purpose: str | None = None) -> list[dict]:
        """The owner's files, newest first (as OpenAI lists them)."""
        return [f for fid, f in reversed(self.files.items()) if self.owners[fid] == owner and purpose in (None, f["purpose"])]

    def delete_file(self, fid: str, owner: str) -> dict:
        """Forget a file and remove it from disk; a batch still reading it as input is refused."""
        self.get_file(fid, owner)
        if any(b["input_file_id"] == fid and b["status"] in ("validating", "in_progress") for b in self.batches.values()):
            raise APIError(409, f"file {fid} is the input of a running batch; cancel the batch first",
                           param="file_id", code="file_in_use")
        (self.dir / "files" / fid).unlink(missing_ok=True)
        del self.files[fid], self.owners[fid]
        return {"id": fid, "object": "file", "deleted": True}

    # ---- batches ----------------------------------------------------------------------------

    def get_batch(self, bid: str, owner: str) -> dict:
        if bid not in self.batches or self.owners[bid] != owner:
            raise APIError(404, f"no such batch: {bid}", param="batch_id", code="not_found")
        return self.batches[bid]

    def list_batches(self, owner: str) -> list[dict]:
        """The owner's batches, newest first (as OpenAI lists them)."""
        return [b for bid, b in reversed(self.batches.items()) if self.owners[bid] == owner]

    def create_batch(self, body: Any, owner: str) -> dict:
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        window = body.get("completion_window", "24h")
        if not isinstance(input_file_id, str):
            raise APIError(400, "input_file_id: a string file id is required", param="input_file_id")
        if endpoint not in BATCH_ENDPOINTS:
            raise APIError(400, f"endpoint must be one of {list(BATCH_ENDPOINTS)}", param="endpoint")
        if window != "24h":
            raise APIError(400, "completion_window must be '24h'", param="completion_window")
        self.get_file(input_file_id, owner)
        bid = f"batch_{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        batch = {"id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": input_file_id,
                 "completion_window": window, "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": now, "in_progress_at": None, "expires_at": now + 24 * 3600, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                 "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        self._start(batch, owner)  # may still refuse the batch: it is registered only after
        self.batches[bid], self.owners[bid] = batch, owner
        return batch

    def _start(self, batch: dict, owner: str) -> None:
        """Run the batch: here, as a task of this server (the gateway runs it as a scheduler job)."""
        self._tasks[batch["id"]] = asyncio.get_running_loop().create_task(self._run(batch, owner))

    def cancel_batch(self, bid: str, owner: str) -> dict:
        batch = self.get_batch(bid, owner)
        if batch["status"] in ("validating", "in_progress"):
            batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
            task = self._tasks.get(bid)
            if task is not None:
                task.cancel()
        return batch

    def _parse_input(self, batch: dict, data: bytes) -> list[dict] | None:
        """The input lines, or None after marking the batch failed with per-line errors."""
        numbered, errors = check_lines(data, batch["endpoint"])
        if errors:
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": errors[:100]})
            return None
        return [line for _, line in numbered]

    async def _run(self, batch: dict, owner: str) -> None:
        try:
            lines = self._parse_input(batch, self.file_content(batch["input_file_id"], owner))
            if lines is None:
                return
            batch.update(status="in_progress", in_progress_at=int(time.time()))
            batch["request_counts"]["total"] = len(lines)
            results: list[tuple[bool, dict] | None] = [None] * len(lines)
            gate = asyncio.Semaphore(self.concurrency)

            async def one(i: int, line: dict) -> None:
                async with gate:
                    status, body = await self.run_one(batch["endpoint"], line["body"], owner)
                ok = status == 200
                record = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                          "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                          "error": None}
                results[i] = (ok, record)
                batch["request_counts"]["completed" if ok else "failed"] += 1

            await asyncio.gather(*(one(i, line) for i, line in enumerate(lines)))
            batch.update(status="finalizing", finalizing_at=int(time.time()))
            done = [r for r in results if r is not None]
            good = [rec for ok, rec in done if ok]
            bad = [rec for ok, rec in done if not ok]
            name = f"{batch['id']}_output.jsonl"
            if good or not bad:
                batch["output_file_id"] = self.add_file(_jsonl(good), name, "batch_output", owner)["id"]
            if bad:
                batch["error_file_id"] = self.add_file(_jsonl(bad), f"{batch['id']}_error.jsonl", "batch_output", owner)["id"]
            batch.update(status="completed", completed_at=int(time.time()))
        except asyncio.CancelledError:
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        except Exception as err:
            log.exception("batch %s failed", batch["id"])
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": [{"code": "server_error", "message": str(err), "param": None, "line": None}]})
        finally:
            self._tasks.pop(batch["id"], None)


def _line_problem(line: Any, endpoint: str | None, seen: set[str]) -> tuple[str, str | None] | None:
    """(what is wrong, the field) for one parsed input line, or None when it is a request line."""
    if not isinstance(line, dict):
        return "the line must be a JSON object", None
    if not isinstance(line.get("custom_id"), str):
        return "each line needs a string custom_id", "custom_id"
    if line["custom_id"] in seen:
        return f"duplicate custom_id {line['custom_id']!r}", "custom_id"
    if line.get("method", "POST") != "POST":
        return f"method must be POST, not {line.get('method')!r}", "method"
    if endpoint is not None and line.get("url") != endpoint:
        return f"url must be the batch endpoint {endpoint}, not {line.get('url')!r}", "url"
    if line.get("url") not in BATCH_ENDPOINTS:
        return f"url must be one of {', '.join(BATCH_ENDPOINTS)}, not {line.get('url')!r}", "url"
    if not isinstance(line.get("body"), dict):
        return "body must be a JSON object", "body"
    return None


def check_lines(data: bytes, endpoint: str | None = None) -> tuple[list[tuple[int, dict]], list[dict]]:
    """The request lines of a batch input file (with their line numbers), and one {"code", "message", "param", "line"} error per bad
    line, in line order (messages start with "line N: "). With `endpoint` None every line must name the
    same url, one of BATCH_ENDPOINTS. Shared by the server, which fails a batch on them, and the gateway,
    which refuses the upload."""
    errors, lines, seen = [], [], set()
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = parse_json(raw, f"line {number}")
        except APIError as err:
            errors.append({"code": "invalid_json_line", "message": err.message, "param": None, "line": number})
            continue
        problem = _line_problem(line, endpoint or (lines[0][1]["url"] if lines else None), seen)
        if problem:
            errors.append({"code": "invalid_request", "message": f"line {number}: {problem[0]}", "param": problem[1],
                           "line": number})
            continue
        seen.add(line["custom_id"])
        lines.append((number, line))
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "the input file holds no requests", "param": None, "line": None})
    return lines, errors


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
