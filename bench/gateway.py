"""Gateway benchmark: latency the gateway adds on a warm model, and 2 replicas vs 1 at 16 clients.

1. added latency: the same tiny request (max_tokens=1) sent N times in a row to a backend directly
   and through the gateway; p50/p99 of each and of the difference (goal: p50 < 2 ms, p99 < 10 ms),
   and the gateway process's CPU time per request (what the hop costs, whatever the host's load);
2. throughput: 16 concurrent clients through the gateway to a model with 1 replica and to the same
   model with 2 (goal: >= 1.5x), in alternating rounds after a warm-up, at 128 and 32 completion
   tokens per request. Each backend runs one torch thread and serve's default 8 batch slots
   (--max-batch): with 16 slots one tiny-model replica batches all 16 clients in steps that cost about
   what 8 rows cost, so a second replica could add little whatever the gateway does.
   On a 2-core host the clients, the gateway and both replicas share the cores, so the run reports
   where the CPU went (milliseconds per request of clients, gateway and backends) and what the same
   clients get from the two backends directly, without the gateway.

Everything runs on this machine with scheduler = "local" (a random tiny model, built here).

    python bench/gateway.py --requests 300 --clients 16 --new-tokens 128 32
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
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


def throughput(targets: list[tuple[str, dict]], clients: int, new_tokens: int, per_client: int) -> float:
    """Completion tokens per second of `clients` concurrent clients, each on its own keep-alive
    connection sending `per_client` requests one after another, client i to target i mod len(targets).

    The clients are coroutines on one event loop (aiohttp), not threads: on a 2-core host whatever the
    load generator burns is taken from the replicas it measures, and 16 threads contending for one GIL
    burn several times what one loop does."""
    import asyncio

    import aiohttp

    body = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": new_tokens, "temperature": 0,
            "ignore_eos": True}

    async def client(i: int, gate: asyncio.Event) -> int:
        url, headers = targets[i % len(targets)]
        tokens = 0
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=1),
                                         timeout=aiohttp.ClientTimeout(total=300)) as session:
            await gate.wait()
            for _ in range(per_client):
                async with session.post(url + "/v1/completions", json=body) as r:
                    if r.status != 200:
                        raise RuntimeError(f"client {i}: HTTP {r.status}: {(await r.text())[:300]}")
                    tokens += (await r.json())["usage"]["completion_tokens"]
        return tokens

    async def run() -> float:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(client(i, gate)) for i in range(clients)]
        await asyncio.sleep(0.05)  # every session open before the clock starts
        t0 = time.perf_counter()
        gate.set()
        tokens = await asyncio.gather(*tasks)
        return sum(tokens) / (time.perf_counter() - t0)

    return asyncio.run(run())


class CPU:
    """CPU seconds that the clients (this process), the gateway and the backends use over a span:
    where the host's cores went, and so what a replica could not have."""

    def __init__(self, gateway: "Gateway") -> None:
        self.groups = {"clients": [os.getpid()], "gateway": [gateway.proc.pid], "backends": gateway.pids()[1:]}

    def read(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}


def engine_counts(gateway: "Gateway") -> tuple[float, float]:
    """Tokens generated and decode steps run, summed over the gateway's backends (their /metrics)."""
    tokens = steps = 0.0
    for base, headers in gateway.backends():
        for line in httpx.get(base + "/metrics", headers=headers, timeout=10).text.splitlines():
            if line.startswith("auroragpt_engine_generated_tokens "):
                tokens += float(line.split()[1])
            elif line.startswith("auroragpt_engine_decode_steps "):
                steps += float(line.split()[1])
    return tokens, steps


def measured(gateway: "Gateway", run, requests: int) -> dict:
    """run()'s tokens/s, the cores busy meanwhile, each group's CPU milliseconds per request, and the
    backends' mean rows per decode step (each request's first token comes from its prefill)."""
    cpu = CPU(gateway)
    counts0 = engine_counts(gateway)
    before, t0 = cpu.read(), time.perf_counter()
    value = run()
    seconds, after = time.perf_counter() - t0, cpu.read()
    counts1 = engine_counts(gateway)
    used = {name: after[name] - before[name] for name in after}
    decoded = counts1[0] - counts0[0] - requests
    return {"tokens_per_s": value, "cores_busy": sum(used.values()) / seconds,
            "cpu_ms_per_request": {name: 1000 * v / requests for name, v in used.items()},
            "rows_per_decode_step": decoded / max(counts1[1] - counts0[1], 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def throughput_rounds(one: "Gateway", two: "Gateway", args, new_tokens: int) -> dict:
    """1 replica against 2 at `new_tokens` per request: alternating rounds (1, 2, 2, 1, ...) so that a
    noisy host's drift falls on both alike; the ratio of the medians, and each round's own ratio."""
    per_client = max(4, math.ceil(args.tokens_per_client / new_tokens))
    requests = args.clients * per_client
    targets = {1: [(one.base, Gateway.headers)], 2: [(two.base, Gateway.headers)]}
    for n in (1, 2):
        throughput(targets[n], args.clients, new_tokens, 2)  # warm-up: every backend has served a batch
    rounds: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.rounds):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            gateway = one if n == 1 else two
            rounds[n].append(measured(gateway, lambda: throughput(targets[n], args.clients, new_tokens, per_client),
                                      requests))
    # the same clients split over the two backends directly: what the host allows without the gateway
    direct = throughput(two.backends(), args.clients, new_tokens, per_client)
    tps = {n: statistics.median(m["tokens_per_s"] for m in rounds[n]) for n in (1, 2)}
    middle = {n: sorted(rounds[n], key=lambda m: m["tokens_per_s"])[len(rounds[n]) // 2] for n in (1, 2)}
    return {"requests_per_round": requests,
            "tokens_per_s_1_replica": tps[1], "tokens_per_s_2_replicas": tps[2],
            "speedup_2_vs_1": tps[2] / tps[1],
            "speedup_each_round": [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(rounds[1], rounds[2])],
            "tokens_per_s_2_replicas_direct": direct, "gateway_share_of_direct_2_replicas": tps[2] / direct,
            "cores_busy_1_replica": middle[1]["cores_busy"], "cores_busy_2_replicas": middle[2]["cores_busy"],
            "cpu_ms_per_request_1_replica": middle[1]["cpu_ms_per_request"],
            "cpu_ms_per_request_2_replicas": middle[2]["cpu_ms_per_request"],
            "rows_per_decode_step_1_replica": middle[1]["rows_per_decode_step"],
            "rows_per_decode_step_2_replicas": middle[2]["rows_per_decode_step"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=300, help="sequential requests of the latency test")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--new-tokens", type=int, nargs="+", default=[128, 32],
                   help="completion lengths of the throughput test (the first is the goal's)")
    p.add_argument("--tokens-per-client", type=int, default=2048, help="tokens each client asks for per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of 1 and 2 replicas")
    p.add_argument("--max-batch", type=int, default=8, help="batch slots of each backend (serve's default: 8)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_model(root)
        results: dict = {}
        one = two = None
        try:
            one = Gateway(root, model, 1, args.max_batch)
            backend, backend_headers = one.backend()
            cpu0 = cpu_seconds(one.proc.pid)
            direct, via = latencies([(backend, backend_headers), (one.base, Gateway.headers)], args.requests)
            results["gateway_cpu_ms_per_request"] = (cpu_seconds(one.proc.pid) - cpu0) / (args.requests + 5) * 1000
            results["latency_ms"] = {"direct_p50": pct(direct, 50), "direct_p99": pct(direct, 99),
                                     "gateway_p50": pct(via, 50), "gateway_p99": pct(via, 99),
                                     "added_p50": pct(via, 50) - pct(direct, 50), "added_p99": pct(via, 99) - pct(direct, 99)}
            two = Gateway(root, model, 2, args.max_batch)
            for new_tokens in args.new_tokens:
                results[f"throughput_{new_tokens}_tokens"] = throughput_rounds(one, two, args, new_tokens)
        finally:
            for gateway in (one, two):
                if gateway is not None:
                    gateway.close()
        results["max_batch"] = args.max_batch
        results["cpus"] = os.cpu_count()
        results["load_average_1_5_15"] = os.getloadavg()
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
