"""Running `auroragpt gateway` as a user does (a subprocess), and cleaning up the jobs it left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "sk-gateway-test-key"
BACKEND_ARGS = '["--device", "cpu", "--dtype", "float64", "--max-batch", "8", "--max-tokens-cap", "200", "--threads", "1"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, model_dir: Path, *, idle_timeout_s: float = 300, min_replicas: int = 0,
                 max_replicas: int = 1, scheduler: str = "local", port: int | None = None, extra_site: str = "", max_tokens_cap: int = 200,
                 federated: bool = False) -> Path:
    """One site "here"; with `federated`, three local sites instead: "broken" (its python does not exist,
    so every submission fails), "a" (max_jobs = 1) and "b", listed in that order for the model."""
    port = port or free_port()
    text = f"""
[gateway]
port = {port}
idle_timeout_s = {idle_timeout_s}
start_timeout_s = 120
poll_interval_s = 0.25
state_dir = "state"

[[sites]]
name = "here"
scheduler = "{scheduler}"
{extra_site}

[[models]]
name = "tiny"
path = "{model_dir}"
{'sites = ["broken", "a", "b"]' if federated else 'site = "here"'}
min_replicas = {min_replicas}
max_replicas = {max_replicas}
serve_args = {BACKEND_ARGS.replace('"200"', f'"{max_tokens_cap}"')}
"""
    if federated:
        text = text.replace(f'name = "here"\nscheduler = "{scheduler}"\n',
                            f'name = "broken"\nscheduler = "local"\npython = "{folder}/no-such-python"\n'
                            '[[sites]]\nname = "a"\nscheduler = "local"\nmax_jobs = 1\n'
                            '[[sites]]\nname = "b"\nscheduler = "local"\n')
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


class Gateway:
    """`auroragpt gateway --config PATH` in a subprocess; `stop()` leaves its jobs running (as a crash would)."""

    def __init__(self, config: Path, keys: str = KEY) -> None:
        self.config = config
        self.port = int(next(line.split("=")[1] for line in config.read_text().splitlines() if line.startswith("port")))
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(config.parent / f"gateway-{time.monotonic_ns()}.log", "w+")
        env = {**os.environ, "AURORAGPT_API_KEYS": keys, "AURORAGPT_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "auroragpt.cli", "gateway", "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {KEY}"}

    def get(self, path: str) -> dict:
        r = httpx.get(self.base + path, headers=self.headers, timeout=10)
        r.raise_for_status()
        return r.json()

    def model(self, name: str = "tiny") -> dict:
        return next(m for m in self.get("/v1/models")["data"] if m["id"] == name)

    def wait_state(self, state: str, timeout_s: float = 120, replicas: int = 1) -> dict:
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            m = self.model()
            if not seen or seen[-1] != m["state"]:
                seen.append(m["state"])
            if m["state"] == state and (state != "running" or m["replicas"] >= replicas):
                m["seen"] = seen
                return m
            time.sleep(0.1)
        raise AssertionError(f"model never reached {state} ({replicas} replicas); states seen: {seen}; log:\n{self.read_log()}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base + "/v1", api_key=KEY, max_retries=0, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def state_file(config: Path) -> dict:
    path = config.parent / "state" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"jobs": [], "submits": 0, "usage": {}}


def kill_local_jobs(config: Path) -> None:
    """End every local backend the state file names (test teardown: jobs outlive the gateway)."""
    for job in state_file(config)["jobs"]:
        if job["id"].startswith("local-"):
            try:
                os.killpg(int(job["id"].split("-")[1]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def backend_pid(job_id: str) -> int:
    return int(job_id.split("-")[1])
