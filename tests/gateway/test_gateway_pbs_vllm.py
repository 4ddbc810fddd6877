"""The PBS path and the vLLM engine path, as far as this machine allows (neither can run for real here).

PBS: no PBS server can be installed here (no Debian package), so `qsub`/`qstat`/`qdel` are
tests/gateway/pbs_shim.py, which runs the job script as a process the way PBS Pro does (PBS_JOBID,
PBS_NODEFILE, `qstat -x -f` full display, exit 153 for an unknown job). That exercises the
gateway's own script, command lines and output parsing, and jobmain's allocation reading, against
the shim's idea of PBS, not against a PBS server.
vLLM: needs a GPU and CUDA wheels; only the command line the job would run is checked.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway_helpers import BACKEND_ARGS

from auroragpt.gateway.config import ModelSpec, Site
from auroragpt.gateway.jobs import PBSScheduler, Scheduler

SHIM = Path(__file__).with_name("pbs_shim.py")


def _until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s} s")


def test_pbs_qsub_qstat_qdel_through_a_process_running_shim(model_dir, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("qsub", "qstat", "qdel", "qrls"):
        (bin_dir / command).write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(SHIM))} {command} \"$@\"\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PBS_SHIM_DIR", str(tmp_path / "pbs"))
    sched = PBSScheduler(Site(name="polaris", scheduler="pbs", submit_args=["-h"]), tmp_path / "state")
    spec = ModelSpec(name="tiny", path=str(model_dir), sites=["polaris"], serve_args=json.loads(BACKEND_ARGS))
    job = sched.submit(spec)
    try:
        assert job.id.endswith(".shimserver") and job.site == "polaris"
        assert sched.status(job) == "queued"  # held (-h from submit_args): job_state = H
        subprocess.run(["qrls", job.id], check=True, timeout=30)
        assert sched.status(job) == "started"
        endpoint = sched.files(job.token)[1]
        where = _until(lambda: endpoint.exists() and json.loads(endpoint.read_text()), 60, "no endpoint file")
        # jobmain read the allocation the launcher reads: the job's own id and the node PBS_NODEFILE names
        assert where["scheduler"] == "pbs" and where["job"] == job.id and where["host"] == socket.gethostname()
        sched.cancel(job)
        _until(lambda: sched.status(job) == "gone", 30, "the job did not end after qdel")
        assert sched.status(job.__class__(id="999.shimserver", model="tiny", site="polaris", token="x")) == "gone"
    finally:
        subprocess.run(["qdel", job.id], capture_output=True, timeout=30)


def test_vllm_engine_job_runs_vllm_openai_server_with_the_job_key(tmp_path, monkeypatch):
    from auroragpt.cli import build_parser
    from auroragpt.gateway.jobmain import serve_command
    from auroragpt.serve.vllm_engine import vllm_command, vllm_keys

    spec = ModelSpec(name="llama", path=str(tmp_path), sites=["s"], engine="vllm", serve_args=["--dtype", "bfloat16"])
    sched = Scheduler(Site(name="s", scheduler="slurm"), tmp_path)
    token, cmd = sched._prepare(spec)
    serve_args = cmd[cmd.index("--") + 1:]
    serve = serve_command(serve_args, "0.0.0.0", 8123)
    assert serve[1:5] == ["-m", "auroragpt.cli", "serve", str(tmp_path)]
    args = build_parser().parse_args(serve[3:])  # what `auroragpt serve` will parse in the job
    assert args.engine == "vllm"
    vllm = vllm_command(args)
    assert vllm[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(vllm[3::2], vllm[4::2]))
    assert flags == {"--model": str(tmp_path), "--host": "0.0.0.0", "--port": "8123", "--served-model-name": "llama",
                     "--max-num-seqs": "8", "--dtype": "bfloat16"}
    monkeypatch.setenv("AURORAGPT_API_KEYS", sched.key(token))  # as jobmain hands it to serve
    assert vllm_keys(args) == [sched.key(token)] and sched.key(token) not in vllm  # to vLLM in its environment only
