"""The gateway end to end with scheduler = "local": real gateway and backend processes, driven over HTTP
and through the official openai client, as a user does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from auroragpt import pids
from gateway_helpers import Gateway, backend_pid, kill_local_jobs, state_file, write_config

PROMPT = "the quick brown fox"


def _first_request_is_503(gw: Gateway) -> dict:
    r = httpx.post(gw.base + "/v1/completions", headers=gw.headers, timeout=30,
                   json={"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    state = r.json()["error"]["model_state"]
    assert state["state"] in ("queued", "starting") and len(state["jobs"]) == 1
    return state


def test_cold_start_retry_restart_kill_and_idle(model_dir, tmp_path):
    config = write_config(tmp_path, model_dir, idle_timeout_s=300)
    gw = Gateway(config)
    try:
        assert gw.model()["state"] == "cold"
        state = _first_request_is_503(gw)
        job_id = state["jobs"][0]
        # a second request while it starts submits nothing more
        _first_request_is_503(gw)
        assert state_file(config)["submits"] == 1
        running = gw.wait_state("running")
        assert running["seen"][0] in ("queued", "starting") and running["replicas"] == 1
        assert running["hosts"][0].startswith("127.0.0.1:")
        jobs = gw.get("/v1/jobs")["data"]
        assert [j["id"] for j in jobs] == [job_id] and jobs[0]["state"] == "running"

        answer = gw.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
        assert answer.usage.completion_tokens >= 1 and answer.choices[0].text

        # the gateway restarted reattaches to the job: no second submit, same job answers
        gw.stop()
        gw = Gateway(config)
        assert gw.wait_state("running", timeout_s=30)["jobs"] == [job_id]
        again = gw.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
        assert again.choices[0].text == answer.choices[0].text
        assert state_file(config)["submits"] == 1
        # the SSE relay: the usage chunk reaches a caller who asked for it, and only that caller
        for asked in (True, False):
            body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3, "temperature": 0, "stream": True,
                    **({"stream_options": {"include_usage": True}} if asked else {})}
            sse = httpx.post(gw.base + "/v1/completions", headers=gw.headers, json=body, timeout=60).text
            events = [json.loads(line[6:]) for line in sse.split("\n\n") if line.startswith("data: {")]
            assert sse.endswith("data: [DONE]\n\n") and len(events) >= 3, sse
            usage = [e for e in events if e["choices"] == []]
            assert (len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 3) if asked else not usage, sse

        # the backend killed mid-stream: the client gets an error event; the next request starts a new job
        stream = gw.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=200, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True})
        first = next(iter(stream))
        assert first.choices[0].text is not None
        os.killpg(backend_pid(job_id), signal.SIGKILL)
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
        assert "failed during the request" in str(caught.value)
        r = httpx.post(gw.base + "/v1/completions", headers=gw.headers, timeout=30,
                       json={"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
        assert r.status_code == 503, r.text
        new_jobs = r.json()["error"]["model_state"]["jobs"]
        assert len(new_jobs) == 1 and new_jobs[0] != job_id
        assert state_file(config)["submits"] == 2

        # waiting for the model instead of a 503 (header), then usage per key
        waited = httpx.post(gw.base + "/v1/completions", headers={**gw.headers, "X-Wait-For-Model": "true"},
                            timeout=150, json={"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
        assert waited.status_code == 200, waited.text
        assert waited.json()["choices"][0]["text"] == answer.choices[0].text
        metrics = httpx.get(gw.base + "/metrics", headers=gw.headers).text
        assert "auroragpt_gateway_completion_tokens_total" in metrics
    finally:
        gw.stop()
        kill_local_jobs(config)


def test_idle_model_is_scaled_down_to_zero(model_dir, tmp_path):
    config = write_config(tmp_path, model_dir, idle_timeout_s=2)
    gw = Gateway(config)
    try:
        _first_request_is_503(gw)
        job_id = gw.wait_state("running")["jobs"][0]
        gw.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=2, temperature=0)
        gw.wait_state("cold", timeout_s=30)
        assert gw.get("/v1/jobs")["data"] == []
        deadline = time.monotonic() + 40  # SIGTERM grace (10 s) + SIGKILL on a loaded 2-core machine
        while time.monotonic() < deadline:
            if not pids.alive(backend_pid(job_id)):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the idle backend process is still alive")
    finally:
        gw.stop()
        kill_local_jobs(config)


def test_two_replicas_serve_16_clients_like_a_direct_server(model_dir, tmp_path):
    # three sites: "broken" (every submission fails), "a" (max_jobs = 1), "b": one replica lands at a after
    # broken fails, the other at b since a is full, and both say so (federation policy, README)
    config = write_config(tmp_path, model_dir, min_replicas=2, max_replicas=2, federated=True)
    gw = Gateway(config)
    try:
        running = gw.wait_state("running", replicas=2, timeout_s=180)
        assert len(running["hosts"]) == 2 and running["sites"] == ["a", "b"]
        assert "no-such-python" in running["site_errors"]["broken"]
        by_site = {j["site"]: j for j in gw.get("/v1/jobs")["data"]}
        assert set(by_site) == {"a", "b"} and "submission failed at broken" in by_site["a"]["note"]
        assert state_file(config)["submits"] == 2
        prompts = [f"{PROMPT} {i}" for i in range(16)]
        results: dict[int, str] = {}
        errors: list[BaseException] = []
        client = gw.client(timeout=120)

        def ask(i: int) -> None:
            try:
                if i % 2:
                    out = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=12, temperature=0)
                    results[i] = out.choices[0].text
                else:
                    chunks = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=12, temperature=0,
                                                       stream=True)
                    results[i] = "".join(c.choices[0].text for c in chunks if c.choices)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors and len(results) == 16
        # a direct server: one of the backends, asked with its own key, bypassing the gateway
        job = state_file(config)["jobs"][0]
        key = (config.parent / "state" / "jobs" / f"{job['token']}.key").read_text().strip()
        direct = openai.OpenAI(base_url=f"http://{job['host']}:{job['port']}/v1", api_key=key, max_retries=0)
        for i, prompt in enumerate(prompts):
            expected = direct.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
            assert results[i] == expected.choices[0].text, i
        for job in state_file(config)["jobs"]:  # least outstanding spread the clients over both replicas
            key = (config.parent / "state" / "jobs" / f"{job['token']}.key").read_text().strip()
            text = httpx.get(f"http://{job['host']}:{job['port']}/metrics", headers={"Authorization": f"Bearer {key}"}).text
            served = [line for line in text.splitlines() if line.startswith('auroragpt_requests_total{route="/v1/completions"')]
            assert served and float(served[0].split()[-1]) >= 4, text
        metrics = httpx.get(gw.base + "/metrics", headers=gw.headers).text
        assert 'auroragpt_gateway_requests_total{key=' in metrics and 'status="200"} 16.0' in metrics
        gw.stop()
        usage = list(state_file(config)["usage"].values())
        assert len(usage) == 1 and usage[0]["requests"] == 16 and usage[0]["completion_tokens"] > 0
        table = subprocess.run([sys.executable, "-m", "auroragpt.cli", "gateway", "usage", "--config", str(config)],
                               capture_output=True, text=True, timeout=60)
        assert table.returncode == 0 and " 16 " in table.stdout, table.stdout + table.stderr
    finally:
        gw.stop()
        kill_local_jobs(config)


def test_a_job_near_its_walltime_is_replaced_without_dropping_a_request(long_model_dir, tmp_path):
    # The old job must be cancelled only once its last stream has ended. Each answer names the job that
    # served it (X-AuroraGPT-Job), so the test checks when the old job's streams ended against when the
    # old job left /v1/jobs. (The streams alone cannot tell: a cancelled backend's uvicorn grants
    # in-flight requests 5 s, and a 3000-token stream of this model can end within that.)
    config = write_config(tmp_path, long_model_dir, min_replicas=1, max_tokens_cap=4000,
                          extra_site="walltime_s = 11\nrenew_before_s = 8")
    gw = Gateway(config)
    try:
        old = gw.wait_state("running", timeout_s=120)["jobs"][0]
        outcomes: list = []
        stop, successor_up = threading.Event(), threading.Event()

        def load() -> None:  # streams keep requests in flight across the hand-over
            client = gw.client(timeout=120)
            while not stop.is_set():
                # once the successor runs, the old job's last streams drain while shorter ones go on
                # through the gateway: a full-length one started then only made the test wait for it
                tokens = 64 if successor_up.is_set() else 3000
                try:
                    raw = client.completions.with_raw_response.create(
                        model="tiny", prompt=PROMPT, max_tokens=tokens, temperature=0, stream=True,
                        extra_body={"ignore_eos": True})
                    got = sum(1 for c in raw.parse() if c.choices)
                    outcomes.append((got, tokens, raw.headers.get("x-auroragpt-job"), time.monotonic()))
                except BaseException as err:  # noqa: BLE001 - reported below
                    outcomes.append(err)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            jobs = gw.get("/v1/jobs")["data"]
            if any(j["state"] == "running" and j["id"] != old for j in jobs):
                successor_up.set()
            if old not in [j["id"] for j in jobs] and any(j["state"] == "running" for j in jobs):
                old_gone_at = time.monotonic()
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"job {old} was never replaced; log:\n{gw.read_log()}")
        until = time.monotonic() + 60  # until the successor has answered too
        while time.monotonic() < until and not any(isinstance(o, tuple) and o[2] != old for o in outcomes):
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert not errors and len(outcomes) >= 2, errors[:3]
        assert all(got == asked for got, asked, *_ in outcomes) and [o[1] for o in outcomes].count(3000) >= 2, outcomes
        served_by_old = [end for *_, job, end in outcomes if job == old]
        assert len(served_by_old) >= 2 and {o[2] for o in outcomes} - {old}, outcomes  # both jobs answered
        late = [round(end - old_gone_at, 2) for end in served_by_old if end > old_gone_at + 0.3]
        assert not late, f"job {old} was cancelled while its streams still ran (they ended {late} s after)"
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.kill(backend_pid(old), 0)
                time.sleep(0.1)
    finally:
        gw.stop()
        kill_local_jobs(config)
