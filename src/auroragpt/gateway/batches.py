"""Batches at the gateway: serve's Files and Batch APIs, kept on disk and run as scheduler jobs.

`GatewayBatches` is serve's `BatchStore` (same routes, ownership checks, ids and line format)
with three differences: every file's and batch's metadata is a small JSON file in the gateway's
state folder (written atomically; a restarted gateway finds them), the input is checked when it
is uploaded and when the batch is created (a 400 naming the line and the field, instead of a
batch that fails later), and a batch runs as one scheduler job (`gateway.batchmain`) on the
first of the model's sites below its `max_jobs` (model servers and running batches counted; when
none has room the batch waits, validating), served with `batch_serve_args` (more slots) and
submitted with `batch_submit_args`. A poller follows each batch: validating (job queued or
loading) -> in_progress (the job reports progress) -> completed/failed, adopting the job's output
and error files as files of the batch's owner and charging their tokens to the owner's usage;
cancel cancels the job.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from auroragpt.atomic import write_atomically
from auroragpt.errors import LaunchError
from auroragpt.gateway.config import GatewayConfig
from auroragpt.gateway.jobs import Job, Scheduler
from auroragpt.log import get_logger
from auroragpt.serve import protocol
from auroragpt.serve.batches import BatchStore, check_lines
from auroragpt.serve.protocol import APIError

log = get_logger(__name__)

TERMINAL = ("completed", "failed", "cancelled", "expired")
Account = Callable[[str, list[tuple[int, int]]], None]  # key id, (prompt, completion) tokens of each answered line


def _refusal(errors: list[dict], what: str, param: str) -> APIError:
    """One 400 listing the first bad lines, each naming its line and field."""
    shown = "; ".join(e["message"] + (f" (field {e['param']})" if e.get("param") else "") for e in errors[:5])
    more = f"; and {len(errors) - 5} more bad lines" if len(errors) > 5 else ""
    return APIError(400, f"{what} has {len(errors)} bad line(s): {shown}{more}. Fix them and upload the file again",
                    param=param, code="invalid_batch_file")


def _no_run_one(endpoint: str, body: dict, key_id: str):
    raise RuntimeError("gateway batches run in a scheduler job, not in the gateway")


class GatewayBatches(BatchStore):
    """Files and batches of the gateway's callers; each batch is one scheduler job."""

    def __init__(self, cfg: GatewayConfig, schedulers: dict[str, Scheduler], account: Account,
                 server_jobs: Callable[[str], int] = lambda site: 0) -> None:
        super().__init__(cfg.state_dir, _no_run_one)
        self.cfg, self.schedulers, self.account = cfg, schedulers, account
        self.server_jobs = server_jobs  # site -> model-server jobs the gateway has there (for max_jobs)
        self.batch_dir = cfg.state_dir / "batches"
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}  # batch id -> the job running it
        self.models: dict[str, str] = {}  # batch id -> the model its lines name
        self.inputs: dict[str, dict] = {}  # input file id -> {"endpoint", "model"} its checked lines name
        self._seq: dict[str, int] = {}  # id -> creation order (listings are newest first)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._load()

    # --- on disk ---------------------------------------------------------------------------
    def _meta(self, fid: str) -> Path:
        return self.dir / "files" / f"{fid}.meta.json"

    def _save_file(self, fid: str) -> None:
        write_atomically(self._meta(fid), json.dumps({"file": self.files[fid], "owner": self.owners[fid],
                                                      "seq": self._seq[fid], "input": self.inputs.get(fid)}))

    def _save_batch(self, bid: str) -> None:
        job = self.jobs.get(bid)
        write_atomically(self.batch_dir / f"{bid}.json", json.dumps(
            {"batch": self.batches[bid], "owner": self.owners[bid], "model": self.models.get(bid),
             "job": job.to_dict() if job else None, "seq": self._seq[bid]}))

    def _load(self) -> None:
        records = []
        for path in [*(self.dir / "files").glob("*.meta.json"), *self.batch_dir.glob("batch_*.json")]:
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable gateway batch record %s: %s", path, err)
        for record in sorted(records, key=lambda r: r.get("seq", 0)):
            if "file" in record:
                fid = record["file"]["id"]
                self.files[fid], self.owners[fid], self._seq[fid] = record["file"], record["owner"], record["seq"]
                if record.get("input"):
                    self.inputs[fid] = record["input"]
                continue
            bid = record["batch"]["id"]
            self.batches[bid], self.owners[bid], self._seq[bid] = record["batch"], record["owner"], record["seq"]
            if record.get("model"):
                self.models[bid] = record["model"]
            if record.get("job"):
                self.jobs[bid] = Job(**record["job"])

    # --- files -----------------------------------------------------------------------------
    def add_file(self, data: bytes, filename: str, purpose: str, owner: str, fid: str | None = None) -> dict:
        """Store a file; a batch input is checked whole first: every line against the Batch API's line
        shape and its body against the live endpoint's schema, all for one served model. (Blocking for a
        big file: serve's upload route calls this off the event loop.)"""
        checked = None
        if purpose == "batch":
            numbered, errors = check_lines(data)
            endpoint = numbered[0][1]["url"] if numbered else None
            model, body_errors = self._check_bodies(numbered, endpoint) if endpoint else ("", [])
            if errors or body_errors:
                raise _refusal(errors + body_errors, f"the batch input file {filename}", "file")
            checked = {"endpoint": endpoint, "model": model}
        info = super().add_file(data, filename, purpose, owner, fid)
        if checked:
            self.inputs[info["id"]] = checked
        self._seq.setdefault(info["id"], time.time_ns())
        self._save_file(info["id"])
        return info

    def delete_file(self, fid: str, owner: str) -> dict:
        answer = super().delete_file(fid, owner)
        self._meta(fid).unlink(missing_ok=True)
        return answer

    # --- batches ---------------------------------------------------------------------------
    def create_batch(self, body, owner: str) -> dict:
        batch = super().create_batch(body, owner)
        self._seq[batch["id"]] = time.time_ns()
        self._save_batch(batch["id"])
        self._wake.set()  # the poller submits the job: sbatch may take seconds, the caller gets its batch now
        return batch

    def _start(self, batch: dict, owner: str) -> None:
        """The input was checked when it was uploaded: here only its lines' url must be the batch's endpoint."""
        fid = batch["input_file_id"]
        checked = self.inputs.get(fid)
        if checked is None:
            raise APIError(400, f"file {fid} was not uploaded with purpose 'batch'", param="input_file_id")
        if checked["endpoint"] != batch["endpoint"]:
            raise APIError(400, f"the lines of file {fid} are for {checked['endpoint']}, not {batch['endpoint']}; "
                           f"create the batch with endpoint={checked['endpoint']!r}", param="endpoint")
        self.models[batch["id"]] = checked["model"]

    def _check_bodies(self, numbered: list[tuple[int, dict]], endpoint: str) -> tuple[str, list[dict]]:
        kind = protocol.ChatRequest if endpoint.endswith("chat/completions") else protocol.CompletionRequest
        models = self.cfg.models
        errors, names = [], {}
        for number, line in numbered:
            try:
                req = kind.model_validate(line["body"])
            except ValidationError as err:
                bad = protocol.validation_error(err)
                field = f"body.{bad.param}" if bad.param else "body"
                errors.append({"code": "invalid_request", "line": number, "param": field,
                               "message": f"line {number}: {field}{bad.message.removeprefix(bad.param or 'body')}"})
                continue
            name = req.model or (next(iter(models)) if len(models) == 1 else None)
            if name not in models:
                errors.append({"code": "model_not_found", "param": "body.model", "line": number,
                               "message": f"line {number}: model {req.model!r} is not served here (models: {', '.join(models)})"})
                continue
            names.setdefault(name, number)
        if len(names) > 1:
            where = ", ".join(f"{m!r} (line {n})" for m, n in names.items())
            errors.append({"code": "invalid_request", "param": "body.model", "line": None,
                           "message": f"the lines name several models: {where}; one batch runs on one model, split the file"})
        return next(iter(names), ""), errors

    def cancel_batch(self, bid: str, owner: str) -> dict:
        batch = self.get_batch(bid, owner)
        if batch["status"] in ("validating", "in_progress"):
            batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
            self._save_batch(bid)
            self._wake.set()  # the poller cancels the job
        return batch

    # --- polling ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stop following batches; their jobs keep running for the next gateway to find."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _poll_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception:  # one bad poll must not end polling
                log.exception("gateway batch poll failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.gateway.poll_interval_s)
            except asyncio.TimeoutError:
                pass

    async def poll_once(self) -> None:
        for bid in [b for b, batch in self.batches.items() if batch["status"] not in TERMINAL]:
            await self._advance(bid)

    async def _advance(self, bid: str) -> None:
        batch, job = self.batches[bid], self.jobs.get(bid)
        if batch["status"] == "cancelling":
            if job is not None:
                await asyncio.to_thread(self.schedulers[job.site].cancel, job)
            self._end(bid, "cancelled")
            return
        if job is None:
            site = self._site_with_room(bid)
            if site is None:
                return  # every site of the model is at max_jobs: the batch waits, validating
            try:
                self.jobs[bid] = await asyncio.to_thread(self._submit, bid, site)
            except (LaunchError, OSError) as err:
                self._end(bid, "failed", f"the batch job could not be submitted: {err}")
                return
            log.info("batch %s runs as job %s", bid, self.jobs[bid].id)
            self._save_batch(bid)
            return
        progress = self._progress(bid)
        if progress is None or not progress["done"]:
            if await asyncio.to_thread(self.schedulers[job.site].status, job) == "gone":
                progress = self._progress(bid)  # it may have finished between the two looks
                if progress is None or not progress["done"]:
                    log_file = self.schedulers[job.site].files(job.token)[2]
                    self._end(bid, "failed", f"the batch job {job.id} ended without writing its results; see {log_file}")
                    return
        if progress is not None and progress["done"]:
            self._finish(bid, progress)
        elif progress is not None and progress["status"] != "validating":
            changed = batch["status"] != "in_progress" or batch["request_counts"] != progress["request_counts"]
            batch.update(status="in_progress", request_counts=progress["request_counts"])
            batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
            if changed:
                self._save_batch(bid)

    def _site_with_room(self, bid: str) -> str | None:
        """The first site of the batch's model below its max_jobs, counting model servers and running batches."""
        for name in self.cfg.models[self.models[bid]].sites:
            limit = self.cfg.sites[name].max_jobs
            batches = sum(1 for b, job in self.jobs.items() if job.site == name and self.batches[b]["status"] not in TERMINAL)
            if limit is None or self.server_jobs(name) + batches < limit:
                return name
        return None

    def _submit(self, bid: str, site: str) -> Job:
        """The batch's job on `site` (blocking: sbatch/qsub)."""
        batch, spec = self.batches[bid], self.cfg.models[self.models[bid]]
        scheduler = self.schedulers[site]
        work = self.batch_dir / bid
        work.mkdir(parents=True, exist_ok=True)
        cmd = [scheduler.python, "-m", "auroragpt.gateway.batchmain", "--input", str(self.dir / "files" / batch["input_file_id"]),
               "--endpoint", batch["endpoint"], "--work-dir", str(work), "--",
               spec.path, "--model-name", spec.name, *spec.serve_args, *spec.batch_serve_args]
        return scheduler.launch(f"{bid}", cmd, spec.name, tuple(spec.batch_submit_args))

    def _progress(self, bid: str) -> dict | None:
        try:
            return json.loads((self.batch_dir / bid / "progress.json").read_text())
        except (OSError, ValueError):
            return None

    def _end(self, bid: str, status: str, error: str | None = None) -> None:
        batch = self.batches[bid]
        batch.update(status=status, **{f"{status}_at": int(time.time())})
        if error:
            batch["errors"] = {"object": "list", "data": [{"code": "batch_job_failed", "message": error, "param": None, "line": None}]}
            log.warning("batch %s: %s", bid, error)
        self._save_batch(bid)
        shutil.rmtree(self.batch_dir / bid, ignore_errors=True)

    def _finish(self, bid: str, progress: dict) -> None:
        """Adopt the job's output and error files as the owner's (ids derived from the batch id, so a
        gateway that stops half-way adopts them again under the same ids) and charge the tokens."""
        batch, owner = self.batches[bid], self.owners[bid]
        work, short = self.batch_dir / bid, bid.removeprefix("batch_")
        for key, name in (("output_file_id", "output"), ("error_file_id", "errors")):
            path = work / f"{name}.jsonl"
            if path.exists():
                data = path.read_bytes()
                batch[key] = self.add_file(data, f"{bid}_{name}.jsonl", "batch_output", owner, fid=f"file-{short}-{name}")["id"]
                if name == "output":
                    self._charge(owner, data)
        batch.update(request_counts=progress["request_counts"], errors=progress["errors"])
        batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
        batch["finalizing_at"] = int(time.time())
        self._end(bid, progress["status"])

    def _charge(self, owner: str, data: bytes) -> None:
        usages = []
        for raw in data.splitlines():
            usage = (json.loads(raw)["response"]["body"] or {}).get("usage") or {}
            usages.append((int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))))
        self.account(owner, usages)
