"""Gateway benchmark: latency the gateway adds on a warm model, and 2 replicas vs 1 at 16 clients.

1. added latency: the same tiny request (max_tokens=1) sent N times in a row to a backend directly
   and through the gateway; p50/p99 of each and of the difference (goal: p50 < 2 ms, p99 < 10 ms),
   and the gateway process's CPU time per request (what the hop costs, whatever the host's load);
2. throughput: 16 concurrent clients through the gateway to a model with 1 replica, then with 2
   (goal: >= 1.5x), each after a warm-up round. Each backend runs one torch thread and serve's
   default 8 batch slots (--max-batch): with 16 slots one tiny-model replica batches all 16 clients
   in steps that cost about what 8 rows cost, so a second replica could add nothing whatever the
   gateway does; the figure for --max-batch 16 is worth reporting beside it.

Everything runs on this machine with scheduler = "local" (a random tiny model, built here).

    python bench/gateway.py --requests 300 --clients 16 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

KEY = "sk-bench-gateway"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(root: Path) -> Path:
    import torch

    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.model.gpt import GPT
    from auroragpt.model.io import save_model
    from auroragpt.model.presets import get_preset

    tok = train_bpe([f"the quick brown fox jumps over the lazy dog {i}" for i in range(200)], 300,
                    root / "tok" / "tokenizer.json", min_frequency=1)
    model = GPT(get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256))
    model.init_weights(torch.Generator().manual_seed(0))
    save_model(model, root / "model", meta={}, tokenizer_path=root / "tok" / "tokenizer.json")
    return root / "model"


class Gateway:
    def __init__(self, root: Path, model: Path, replicas: int, max_batch: int = 8) -> None:
        self.root = root / f"gw{replicas}"
        self.root.mkdir()
        self.port = _free_port()
        (self.root / "gateway.toml").write_text(f"""
[gateway]
port = {self.port}
poll_interval_s = 0.25
state_dir = "state"
[[sites]]
name = "here"
scheduler = "local"
[[models]]
name = "tiny"
path = "{model}"
site = "here"
min_replicas = {replicas}
max_replicas = {replicas}
serve_args = ["--device", "cpu", "--threads", "1", "--max-batch", "{max_batch}"]
""")
        env = {**os.environ, "AURORAGPT_API_KEYS": KEY, "OMP_NUM_THREADS": "1"}
        self.log = open(self.root / "gateway.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "auroragpt.cli", "gateway", "--config",
                                      str(self.root / "gateway.toml")], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                models = httpx.get(self.base + "/v1/models", headers=self.headers, timeout=2).json()["data"]
                if models[0]["state"] == "running" and models[0]["replicas"] == replicas:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway with {replicas} replicas did not come up; see {self.root}")

    headers = {"Authorization": f"Bearer {KEY}"}

    def backend(self) -> tuple[str, dict]:
        return self.backends()[0]

    def backends(self) -> list[tuple[str, dict]]:
        """Each backend's address and its own key (to ask it directly, bypassing the gateway)."""
        state = json.loads((self.root / "state" / "state.json").read_text())
        out = []
        for job in state["jobs"]:
            key = (self.root / "state" / "jobs" / f"{job['token']}.key").read_text().strip()
            out.append((f"http://{job['host']}:{job['port']}", {"Authorization": f"Bearer {key}"}))
        return out

    def pids(self) -> list[int]:
        """The gateway's and its backends' processes."""
        state = json.loads((self.root / "state" / "state.json").read_text())
        return [self.proc.pid] + [int(job["id"].split("-")[1]) for job in state["jobs"]]

    def close(self) -> None:
        state = json.loads((self.root / "state" / "state.json").read_text())
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        for job in state["jobs"]:
            try:
                os.killpg(int(job["id"].split("-")[1]), signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.log.close()


def latencies(targets: list[tuple[str, dict]], n: int) -> list[list[float]]:
    """Sequential latencies of a one-token request to each target, the targets interleaved request by
    request so that a noisy host's load falls on both alike."""
    body = {"model": "tiny", "prompt": "the quick", "max_tokens": 1, "temperature": 0}
    out: list[list[float]] = [[] for _ in targets]
    clients = [httpx.Client(headers=headers, timeout=60) for _, headers in targets]
    try:
        for _ in range(5):
            for (base, _), client in zip(targets, clients):
                client.post(base + "/v1/completions", json=body)
        for _ in range(n):
            for i, ((base, _), client) in enumerate(zip(targets, clients)):
                t0 = time.perf_counter()
                client.post(base + "/v1/completions", json=body).raise_for_status()
                out[i].append(time.perf_counter() - t0)
    finally:
        for client in clients:
            client.close()
    return out


def throughput(base: str | list[tuple[str, dict]], clients: int, new_tokens: int, per_client: int) -> float:
    """Completion tokens per second over `clients` threads, each sending `per_client` requests to the
    gateway at `base`, or, given (base, headers) targets, client i to target i mod len(targets)."""
    targets = [(base, Gateway.headers)] if isinstance(base, str) else base
    body = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    tokens, gate = [0] * clients, threading.Event()

    def run(i: int) -> None:
        url, headers = targets[i % len(targets)]
        with httpx.Client(headers=headers, timeout=300) as client:
            gate.wait()
            for _ in range(per_client):
                r = client.post(url + "/v1/completions", json=body)
                r.raise_for_status()
                tokens[i] += r.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    gate.set()
    for t in threads:
        t.join()
    return sum(tokens) / (time.perf_counter() - t0)


def measured(gateway: "Gateway", run) -> tuple[float, float]:
    """run()'s result, and the cores that this process, the gateway and its backends kept busy meanwhile
    (near the host's core count: the run was CPU-bound here, and more cores would give more)."""
    pids = [os.getpid(), *gateway.pids()]
    before, t0 = sum(cpu_seconds(pid) for pid in pids), time.perf_counter()
    value = run()
    return value, (sum(cpu_seconds(pid) for pid in pids) - before) / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--per-client", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=8, help="batch slots of each backend (serve's default: 8)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_model(root)
        results = {}
        one = Gateway(root, model, 1, args.max_batch)
        try:
            backend, backend_headers = one.backend()
            cpu0 = cpu_seconds(one.proc.pid)
            direct, via = latencies([(backend, backend_headers), (one.base, Gateway.headers)], args.requests)
            results["gateway_cpu_ms_per_request"] = (cpu_seconds(one.proc.pid) - cpu0) / (args.requests + 5) * 1000
            results["latency_ms"] = {"direct_p50": pct(direct, 50), "direct_p99": pct(direct, 99),
                                     "gateway_p50": pct(via, 50), "gateway_p99": pct(via, 99),
                                     "added_p50": pct(via, 50) - pct(direct, 50), "added_p99": pct(via, 99) - pct(direct, 99)}
            throughput(one.base, args.clients, args.new_tokens, 1)  # warm-up
            results["tokens_per_s_1_replica"], results["cores_busy_1_replica"] = measured(
                one, lambda: throughput(one.base, args.clients, args.new_tokens, args.per_client))
        finally:
            one.close()
        two = Gateway(root, model, 2, args.max_batch)
        try:
            throughput(two.base, args.clients, args.new_tokens, 1)  # warm-up: both fresh backends
            results["tokens_per_s_2_replicas"], results["cores_busy_2_replicas"] = measured(
                two, lambda: throughput(two.base, args.clients, args.new_tokens, args.per_client))
            # the same clients split over the two backends directly: what the host allows without the gateway
            results["tokens_per_s_2_replicas_direct"] = throughput(two.backends(), args.clients, args.new_tokens,
                                                                   args.per_client)
        finally:
            two.close()
        results["speedup_2_vs_1"] = results["tokens_per_s_2_replicas"] / results["tokens_per_s_1_replica"]
        results["gateway_share_of_direct_2_replicas"] = results["tokens_per_s_2_replicas"] / results["tokens_per_s_2_replicas_direct"]
        results["max_batch"] = args.max_batch
        results["cpus"] = os.cpu_count()
        results["load_average_1_5_15"] = os.getloadavg()
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
