"""Batches at the gateway with scheduler = "local": real gateway, batch-job and backend processes, driven
through the official openai client as a user does."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import openai
import pytest
from gateway_helpers import KEY, Gateway, kill_local_jobs, state_file, write_config

from auroragpt.serve.auth import hash_key

OTHER = "sk-gateway-other-key"
PROMPTS = ["the quick brown fox", "a gateway starts", "def add(a, b):", "the lazy dog"]


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _line(i: int, prompt: str, max_tokens: int = 8, **extra) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions",
            "body": {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}}


def _wait(client: openai.OpenAI, batch_id: str, until: tuple[str, ...], timeout_s: float = 120) -> tuple[object, list[str]]:
    """The batch once its status is one of `until`, and the statuses seen on the way."""
    deadline, seen = time.monotonic() + timeout_s, []
    while True:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in until:
            return batch, seen
        assert batch.status not in ("completed", "failed", "cancelled"), f"batch ended early: {seen}, {batch.errors}"
        assert time.monotonic() < deadline, f"batch stuck; statuses seen: {seen}"
        time.sleep(0.1)


def _batch_jobs(gw: Gateway) -> list[dict]:
    return [j for j in gw.get("/v1/jobs")["data"] if "batch" in j]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")


def test_batch_upload_run_results_ownership_and_usage(model_dir, tmp_path):
    config = write_config(tmp_path, model_dir, idle_timeout_s=300)
    gw = Gateway(config, keys=f"{KEY},{OTHER}")
    try:
        client = gw.client()
        # a live request first: its model server (asked later for the direct answers) starts meanwhile
        cold = httpx.post(gw.base + "/v1/completions", headers=gw.headers, timeout=30, json={"model": "tiny", "prompt": "hi"})
        assert cold.status_code == 503, cold.text
        # a bad upload is refused whole, naming the line and the field
        bad = _jsonl([_line(0, "hi"), {"method": "POST", "url": "/v1/completions", "body": {}},
                      {**_line(2, "hi"), "url": "/v1/embeddings"}])
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(file=("bad.jsonl", bad), purpose="batch")
        message = caught.value.body["message"]
        assert "line 2" in message and "custom_id" in message and "line 3" in message and "url" in message, message
        # so is a body the live endpoint would refuse, or a model not served here
        typo = _jsonl([_line(0, "hi"), _line(1, "hi", temperature="hot"), _line(2, "hi", model="huge")])
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(file=("typo.jsonl", typo), purpose="batch")
        message = caught.value.body["message"]
        assert "line 2: body.temperature" in message and "line 3: model 'huge'" in message, message
        assert client.files.list().data == []
        # a batch whose endpoint is not its lines' url is refused when it is created
        ok = client.files.create(file=("ok.jsonl", _jsonl([_line(0, "hi")])), purpose="batch")
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.create(input_file_id=ok.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert "are for /v1/completions" in caught.value.body["message"]
        assert client.batches.list().data == []

        # a good file, with one line the backend refuses (max_tokens over its cap): that line fails alone
        lines = [_line(i, p) for i, p in enumerate(PROMPTS)] + [_line(9, "too many", max_tokens=500)]
        uploaded = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
        assert batch.status == "validating"
        done, seen = _wait(client, batch.id, ("completed", "failed", "cancelled"))
        assert done.status == "completed", (seen, done.errors, gw.read_log())
        assert seen[0] == "validating" and set(seen) <= {"validating", "in_progress", "completed"}, seen
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
        assert _batch_jobs(gw) == []  # the job has ended; its results are still there
        results = {r["custom_id"]: r for r in map(json.loads, client.files.content(done.output_file_id).text.splitlines())}
        errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
        assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("req-9", 400)]

        # the same requests asked directly (a live replica) at temperature 0 answer the same
        waiting = gw.client(default_headers={"X-Wait-For-Model": "true"}, timeout=150)
        before = state_file(config)["usage"].get(hash_key(KEY), {"prompt_tokens": 0, "completion_tokens": 0})
        for i, prompt in enumerate(PROMPTS):
            direct = waiting.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
            assert results[f"req-{i}"]["response"]["status_code"] == 200
            assert results[f"req-{i}"]["response"]["body"]["choices"][0]["text"] == direct.choices[0].text

        # batch tokens were charged to the key (before the live requests above)
        batch_tokens = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in results.values())
        assert batch_tokens > 0 and before["completion_tokens"] == batch_tokens, (before, batch_tokens)
        assert before["requests"] == 4

        # another key sees none of it
        other = openai.OpenAI(base_url=gw.base + "/v1", api_key=OTHER, max_retries=0)
        for call in (lambda: other.batches.retrieve(batch.id), lambda: other.files.content(done.output_file_id),
                     lambda: other.files.retrieve(uploaded.id), lambda: other.batches.cancel(batch.id)):
            with pytest.raises(openai.NotFoundError):
                call()
        assert other.batches.list().data == [] and other.files.list().data == []
        assert [b.id for b in client.batches.list().data] == [batch.id]
        assert [f.id for f in client.files.list(purpose="batch").data] == [uploaded.id, ok.id]  # newest first
    finally:
        gw.stop()
        kill_local_jobs(config)


def test_batch_survives_a_gateway_restart_cancel_kills_its_job_and_a_dead_job_fails_it(model_dir, tmp_path):
    config = write_config(tmp_path, model_dir, idle_timeout_s=300)
    # two slots: the batch lasts a few seconds, long enough to restart the gateway under it
    config.write_text(config.read_text() + 'batch_serve_args = ["--max-batch", "2"]\n')
    gw = Gateway(config)
    pids = []
    try:
        client = gw.client()
        lines = [_line(i, PROMPTS[i % 4], max_tokens=100, ignore_eos=True) for i in range(12)]
        uploaded = client.files.create(file=("long.jsonl", _jsonl(lines)), purpose="batch")
        longer = [_line(i, PROMPTS[i % 4], max_tokens=190, ignore_eos=True) for i in range(32)]
        longer_file = client.files.create(file=("longer.jsonl", _jsonl(longer)), purpose="batch")
        # two batches at once (their jobs load side by side): one to restart the gateway under, one to cancel
        doomed = client.batches.create(input_file_id=longer_file.id, endpoint="/v1/completions", completion_window="24h")
        first = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")

        def job_pid(batch_id: str) -> int:
            return next(int(j["id"].split("-")[1]) for j in _batch_jobs(gw) if j["batch"] == batch_id)

        # the first batch's job is paused (SIGSTOP) as soon as it runs, so it provably still runs while the
        # gateway restarts; it is let go afterwards
        _wait(client, first.id, ("in_progress",))
        pids.append(job_pid(first.id))
        os.killpg(pids[-1], signal.SIGSTOP)

        # cancel: the job is killed, the batch ends cancelled and never completes
        _wait(client, doomed.id, ("in_progress",))
        pid = job_pid(doomed.id)
        pids.append(pid)
        assert _alive(pid)
        assert client.batches.cancel(doomed.id).status == "cancelling"
        cancelled, _ = _wait(client, doomed.id, ("cancelled", "completed", "failed"), timeout_s=30)
        assert cancelled.status == "cancelled" and cancelled.output_file_id is None
        assert cancelled.cancelled_at is not None
        assert not _alive(pid) and [j["batch"] for j in _batch_jobs(gw)] == [first.id]

        client.close()
        gw.stop()
        gw = Gateway(config)
        client = gw.client()
        time.sleep(1)  # a few polls of the new gateway
        again = client.batches.retrieve(first.id)
        assert again.status == "in_progress" and again.request_counts.total == 12, again
        assert [j["batch"] for j in _batch_jobs(gw)] == [first.id]
        assert client.batches.retrieve(doomed.id).status == "cancelled"
        os.killpg(pids[0], signal.SIGCONT)
        done, _ = _wait(client, first.id, ("completed",))
        assert done.request_counts.completed == 12, done
        outputs = client.files.content(done.output_file_id).text.splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in outputs) == sorted(line["custom_id"] for line in lines)
        assert all(json.loads(x)["response"]["body"]["usage"]["completion_tokens"] == 100 for x in outputs)
        assert state_file(config)["submits"] == 0  # no model server was needed for any of it

        # a job that dies (here while it loads the model) fails its batch, pointing at the job's log
        third = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
        deadline = time.monotonic() + 30
        while not _batch_jobs(gw) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids.append(int(_batch_jobs(gw)[0]["id"].split("-")[1]))
        os.killpg(pids[-1], signal.SIGKILL)
        failed, _ = _wait(client, third.id, ("failed", "completed"), timeout_s=30)
        assert failed.status == "failed" and failed.output_file_id is None
        assert "ended without writing its results" in failed.errors.data[0].message
        assert f"{third.id}.log" in failed.errors.data[0].message
    finally:
        gw.stop()
        kill_local_jobs(config)
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_batch_job_on_slurm_is_sized_for_throughput_and_followed_to_its_results(model_dir, tmp_path, monkeypatch):
    """The Slurm path with stand-in sbatch/squeue/scancel (a real cluster is not needed to check what is
    submitted, how a finished job's results are adopted, and that cancel calls scancel)."""
    import asyncio

    from auroragpt.gateway.batches import GatewayBatches
    from auroragpt.gateway.config import load_gateway_config
    from auroragpt.gateway.jobs import scheduler_for

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, answer in (("sbatch", "4242"), ("squeue", "RUNNING"), ("scancel", "")):
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@" >> {tmp_path}/calls\necho {answer}\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = write_config(tmp_path, model_dir, scheduler="slurm", extra_site='submit_args = ["-A", "proj"]\nmax_jobs = 1')
    config.write_text(config.read_text() + 'batch_submit_args = ["--time=04:00:00"]\n')
    cfg = load_gateway_config(config)
    charged, servers = [], {"here": 1}

    async def scenario():
        store = GatewayBatches(cfg, {n: scheduler_for(s, cfg.state_dir) for n, s in cfg.sites.items()},
                               lambda key, usages: charged.append((key, usages)), lambda site: servers[site])
        uploaded = store.add_file(_jsonl([_line(0, "hi"), _line(1, "ho")]), "in.jsonl", "batch", "key-a")
        batch = store.create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/completions"}, "key-a")
        await store.poll_once()  # the site's one job (max_jobs = 1) is a model server: the batch waits
        assert batch["status"] == "validating" and batch["id"] not in store.jobs
        servers["here"] = 0
        await store.poll_once()
        job = store.jobs[batch["id"]]
        assert job.id == "4242" and batch["status"] == "validating"
        calls = (tmp_path / "calls").read_text().split()
        assert calls[:4] == ["sbatch", "--parsable", "-A", "proj"] and calls[4] == "--time=04:00:00"
        script = open(calls[5]).read()
        assert "-m auroragpt.gateway.batchmain" in script and "--max-batch 8 --max-tokens-cap 200" in script
        assert script.rstrip().endswith("--max-batch 32")  # batch_serve_args come last, so they win
        second = store.create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/completions"}, "key-a")
        await store.poll_once()  # nor does a second batch get a job while the first runs
        assert second["status"] == "validating" and second["id"] not in store.jobs
        # what the job writes when it is done
        work = cfg.state_dir / "batches" / batch["id"]
        record = {"custom_id": "req-0", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 3, "completion_tokens": 5}}}}
        (work / "output.jsonl").write_text(json.dumps(record) + "\n")
        (work / "progress.json").write_text(json.dumps({"status": "completed", "done": True, "errors": None,
                                                        "request_counts": {"total": 2, "completed": 1, "failed": 1}}))
        await store.poll_once()
        assert batch["status"] == "completed" and batch["error_file_id"] is None
        assert store.file_content(batch["output_file_id"], "key-a") == (json.dumps(record) + "\n").encode()
        assert charged == [("key-a", [(3, 5)])] and not work.exists()
        # a restarted gateway sees the same batch and files
        again = GatewayBatches(cfg, store.schedulers, lambda key, usages: None)
        assert again.get_batch(batch["id"], "key-a") == batch
        assert again.list_files("key-a")[0]["id"] == batch["output_file_id"]

        assert second["id"] in store.jobs  # submitted once the first batch's job was done
        store.cancel_batch(second["id"], "key-a")
        await store.poll_once()
        assert second["status"] == "cancelled"
        assert (tmp_path / "calls").read_text().splitlines()[-1] == "scancel 4242"

    asyncio.run(scenario())


def _left_squeue(job_id: str, timeout_s: float = 30) -> bool:
    import subprocess

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        if out.strip() in ("", "CANCELLED", "COMPLETED"):
            return True
        time.sleep(0.2)
    return False


def test_batch_on_a_real_slurm_cluster(slurm_cluster, model_dir, tmp_path):
    """sbatch runs the batch; results after the job has left squeue; cancel is an scancel."""
    import subprocess

    config = write_config(tmp_path, model_dir, scheduler="slurm")
    gw = Gateway(config)
    try:
        client = gw.client()
        uploaded = client.files.create(file=("in.jsonl", _jsonl([_line(i, p) for i, p in enumerate(PROMPTS)])), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
        deadline = time.monotonic() + 240
        while not _batch_jobs(gw) and client.batches.retrieve(batch.id).status == "validating":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        job_id = _batch_jobs(gw)[0]["id"] if _batch_jobs(gw) else None
        try:
            done, seen = _wait(client, batch.id, ("completed", "failed"), timeout_s=240)
        except AssertionError:
            state = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True).stdout
            if state.startswith("PENDING"):
                pytest.skip(f"the one-node cluster is busy: batch job {job_id} still PENDING after 240 s")
            raise
        if done.status == "failed" and "Unable to contact slurm controller" in done.errors.data[0].message:
            pytest.skip(f"the shared Slurm controller went away during the test: {done.errors.data[0].message}")
        assert done.status == "completed" and done.request_counts.completed == 4, (seen, done.errors)
        assert _left_squeue(job_id)  # the job has ended; its results are still there
        texts = [json.loads(x)["response"]["body"]["choices"][0]["text"] for x in client.files.content(done.output_file_id).text.splitlines()]
        assert len(texts) == 4 and all(isinstance(t, str) for t in texts)

        long = [_line(i, PROMPTS[i % 4], max_tokens=190, ignore_eos=True) for i in range(32)]
        long_file = client.files.create(file=("long.jsonl", _jsonl(long)), purpose="batch")
        second = client.batches.create(input_file_id=long_file.id, endpoint="/v1/completions", completion_window="24h")
        while not _batch_jobs(gw):
            assert time.monotonic() < deadline + 60
            time.sleep(0.1)
        job_id = _batch_jobs(gw)[0]["id"]
        assert client.batches.cancel(second.id).status == "cancelling"
        cancelled, _ = _wait(client, second.id, ("cancelled",), timeout_s=60)
        assert cancelled.output_file_id is None
        assert _left_squeue(job_id)
        job_log = config.parent / "state" / "jobs" / f"{second.id}.log"
        assert "batch finished" not in (job_log.read_text() if job_log.exists() else "")
    finally:
        gw.stop()
