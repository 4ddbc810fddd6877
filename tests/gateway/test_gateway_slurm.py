"""The gateway on a real one-node Slurm cluster: sbatch on a cold model, squeue while it starts,
scancel mid-stream, scale-down when idle. The cluster comes from the `slurm_cluster` fixture
(tests/slurm_cluster.py), which starts slurmctld + slurmd + munge as root (installing Debian's
slurm-wlm and munge when missing) and skips, saying why, only where that cannot be done."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import openai
import pytest
from gateway_helpers import Gateway, state_file, write_config

PROMPT = "the quick brown fox"


def _in_squeue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    return bool(out.strip())


def _wait_running(gw: Gateway, job_id: str) -> dict:
    """Running within a bounded time; a job still pending behind other users' jobs skips, saying so."""
    try:
        return gw.wait_state("running", timeout_s=240)
    except AssertionError:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %R"], capture_output=True, text=True).stdout
        if state.startswith("PENDING"):
            others = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
            pytest.skip(f"the one-node cluster is busy: job {job_id} still {state.strip()} after 240 s behind {others!r}")
        raise


def _cold_request(gw: Gateway) -> str:
    r = httpx.post(gw.base + "/v1/completions", headers=gw.headers, timeout=60,
                   json={"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
    jobs = r.json()["error"]["model_state"]["jobs"]
    assert len(jobs) == 1
    return jobs[0]


@pytest.mark.timeout(600)  # two bounded 240 s queue waits must end in their stated skip, not in the 300 s default
def test_slurm_cold_start_restart_scancel_and_idle(slurm_cluster, long_model_dir, tmp_path):
    config = write_config(tmp_path, long_model_dir, scheduler="slurm", idle_timeout_s=6, max_tokens_cap=4000)
    gw = Gateway(config)
    submitted: list[str] = []
    try:
        assert gw.model()["state"] == "cold"
        job_id = _cold_request(gw)
        submitted.append(job_id)
        assert job_id.isdigit() and _in_squeue(job_id)
        running = _wait_running(gw, job_id)
        order = ["queued", "starting", "running"]
        assert running["seen"][-1] == "running" and running["seen"] == sorted(running["seen"], key=order.index)
        answer = gw.client(timeout=60).completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
        assert answer.choices[0].text
        # the job named itself from the allocation as the launcher reads it (SLURM_JOB_ID, SLURM_JOB_NODELIST)
        token = state_file(config)["jobs"][0]["token"]
        where = json.loads((config.parent / "state" / "jobs" / f"{token}.endpoint.json").read_text())
        assert where["scheduler"] == "slurm" and where["job"] == job_id and where["host"] == slurm_cluster.host

        gw.stop()  # a restarted gateway reattaches: no second sbatch
        gw = Gateway(config)
        assert gw.wait_state("running", timeout_s=30)["jobs"] == [job_id]
        assert state_file(config)["submits"] == 1

        stream = gw.client(timeout=60).completions.create(model="tiny", prompt=PROMPT, max_tokens=4000, temperature=0,
                                                          stream=True, extra_body={"ignore_eos": True})
        next(iter(stream))
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
        assert "failed during the request" in str(caught.value)
        new_job = _cold_request(gw)
        submitted.append(new_job)
        assert new_job != job_id and state_file(config)["submits"] == 2

        _wait_running(gw, new_job)
        gw.client(timeout=60).completions.create(model="tiny", prompt=PROMPT, max_tokens=2, temperature=0)
        gw.wait_state("cold", timeout_s=60)  # idle_timeout_s: the job is cancelled
        deadline = time.monotonic() + 30
        while _in_squeue(new_job) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _in_squeue(new_job)
    finally:
        gw.stop()
        # every job this test's gateway owns or ever answered with, so none holds the node's CPUs afterwards
        for job in {*submitted, *(j["id"] for j in state_file(config)["jobs"])}:
            subprocess.run(["scancel", job], capture_output=True, timeout=30)
