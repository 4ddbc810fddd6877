"""Serving benchmark: KV cache vs. full recomputation, and continuous batching vs. one client.

Ratios are measured in the same run on the same machine, so they survive a noisy host:

1. one stream, N new tokens: tokens/s with the engine's KV cache vs. recomputing the whole
   sequence for every token (goal: >= 5x at N=256);
2. total tokens/s with C concurrent clients vs. one (goal: >= 3x at C=8), all through the engine;
3. per-request time to first token (TTFT), time per output token (TPOT) and inter-token latency
   (ITL) percentiles, as vLLM's serving benchmark reports them.

The model is a randomly initialised preset (weights do not change the cost); the tokenizer is a
stand-in mapping ids to characters, so what is timed is the model and the engine, not a BPE.
End of document is switched off so every request generates exactly N tokens.

    python bench/serve.py --preset tiny --new-tokens 256 --clients 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from auroragpt.model.gpt import GPT
from auroragpt.model.presets import get_preset
from auroragpt.serve.engine import Engine, SamplingParams


class IdTokenizer:
    """ids -> one character each; no end-of-document token."""

    eod_id = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def decode(self, ids) -> str:
        return "".join(chr(0x4E00 + i % 20000) for i in ids)


@torch.inference_mode()
def recompute_generate(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache: the whole sequence goes through the model every step."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids], device=model.rope_cos.device))[0, -1].argmax()))
    return ids[len(prompt):]


def timed_request(engine: Engine, prompt: list[int], n: int, out: list, index: int, start_gate: threading.Event) -> None:
    start_gate.wait()
    t0 = time.perf_counter()
    stamps, ids = [], []
    for event in engine.stream(prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)):
        if event.token_ids:
            stamps.append(time.perf_counter())
            ids.extend(event.token_ids)
    out[index] = {"start": t0, "stamps": stamps, "ids": ids}


def run_clients(request, target, prompts: list[list[int]], n: int) -> tuple[float, list[dict]]:
    """One thread per prompt calling request(target, prompt, n, results, i, gate), all released at once."""
    gate = threading.Event()
    results: list = [None] * len(prompts)
    threads = [threading.Thread(target=request, args=(target, p, n, results, i, gate)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    gate.set()
    for t in threads:
        t.join(timeout=3600)
    return time.perf_counter() - t0, results


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    return {"mean": statistics.fmean(ordered), "p50": at(50), "p90": at(90), "p99": at(99)}


def latency_stats(results: list[dict]) -> dict[str, dict[str, float]]:
    ttft = [(r["stamps"][0] - r["start"]) * 1e3 for r in results]
    tpot = [(r["stamps"][-1] - r["stamps"][0]) * 1e3 / (len(r["stamps"]) - 1) for r in results if len(r["stamps"]) > 1]
    itl = [(b - a) * 1e3 for r in results for a, b in zip(r["stamps"], r["stamps"][1:])]
    return {"ttft_ms": percentiles(ttft), "tpot_ms": percentiles(tpot), "itl_ms": percentiles(itl)}


def _sse_request(base: str, prompt: list[int], n: int, out: list, index: int, gate: threading.Event) -> None:
    """One streamed completion over HTTP; timestamps of every event that carries text."""
    import httpx

    body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    client = httpx.Client(timeout=600)  # made before the clock starts: building one costs ~50 ms of CPU
    gate.wait()
    t0, stamps, tokens = time.perf_counter(), [], 0
    with client, client.stream("POST", base + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            out[index] = {"error": f"the server answered {response.status_code}: {response.read().decode()}"}
            return
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                stamps.append(time.perf_counter())
    out[index] = {"start": t0, "stamps": stamps, "ids": [0] * tokens}


def http_benchmark(args: argparse.Namespace) -> None:
    """1 vs C streaming clients against a real `auroragpt serve` process (BPE tokenizer, JSON, SSE)."""
    import os
    import socket
    import subprocess
    import tempfile

    import httpx

    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.model.io import save_model

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        texts = [Path(m.__file__).read_text() for m in (argparse, json, statistics, threading)]  # local text only
        tok = train_bpe(texts, 1024, Path(tmp) / "tokenizer.json")
        cfg = get_preset(args.preset, vocab_size=tok.vocab_size, max_seq_len=args.prompt_tokens + args.new_tokens + 8)
        model = GPT(cfg)
        model.init_weights(torch.Generator().manual_seed(0))
        save_model(model, Path(tmp) / "model", tokenizer_path=Path(tmp) / "tokenizer.json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "AURORAGPT_LOG_LEVEL": "WARNING"}
        threads = ["--threads", str(args.threads)] if args.threads else []
        server = subprocess.Popen([sys.executable, "-m", "auroragpt.cli", "serve", str(Path(tmp) / "model"), "--port", str(port),
                                   "--device", args.device, "--dtype", args.dtype, "--max-batch", str(args.clients),
                                   "--max-tokens-cap", str(args.new_tokens), *threads], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                time.sleep(0.2)
            ids = tok.encode(texts[0])
            prompts = [ids[i * args.prompt_tokens:(i + 1) * args.prompt_tokens] for i in range(args.clients)]
            n = args.new_tokens
            print(f"HTTP: preset {args.preset}, {args.device} {args.dtype}, {n} new tokens, {args.clients} clients")
            for label, batch in (("warm-up", prompts[:1]), ("1 client", prompts[:1]), (f"{args.clients} clients", prompts)):
                wall, results = run_clients(_sse_request, base, batch, n if label != "warm-up" else 4)
                failed = [("no answer" if r is None else r["error"]) for r in results if r is None or "error" in r]
                if failed:
                    raise SystemExit(f"{len(failed)} request(s) failed, e.g. {failed[0]}")
                if label == "warm-up":
                    continue
                total = sum(len(r["ids"]) for r in results)
                print(f"{label:12s}: {total / wall:8.1f} tok/s total ({total} tokens in {wall:.2f} s)")
                for name, values in latency_stats(results).items():
                    print(f"  {name:8s} " + "  ".join(f"{k} {v:8.2f}" for k, v in values.items()))
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--http", action="store_true", help="measure 1 vs C clients through a real server over HTTP")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.http:
        http_benchmark(args)
        return
    torch.manual_seed(0)
    cfg = get_preset(args.preset, max_seq_len=args.prompt_tokens + args.new_tokens + 8)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    model = model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    model.reset_rotary(args.device)
    tokenizer = IdTokenizer(cfg.vocab_size)
    engine = Engine(model, tokenizer, max_batch=max(args.clients, 1)).start()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, cfg.vocab_size, (args.prompt_tokens,), generator=gen).tolist() for _ in range(args.clients)]
    n = args.new_tokens
    print(f"preset {args.preset} ({cfg.num_params() / 1e6:.1f}M params), {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads, prompt {args.prompt_tokens}, {n} new tokens, {args.clients} clients")

    engine.generate(prompts[0], SamplingParams(max_tokens=8, temperature=0))  # warm-up
    recompute_generate(model, prompts[0], 4)

    t0 = time.perf_counter()
    reference = recompute_generate(model, prompts[0], n)
    recompute_s = time.perf_counter() - t0
    wall1, single = run_clients(timed_request, engine, prompts[:1], n)
    agree = sum(a == b for a, b in zip(single[0]["ids"], reference)) / n
    cached_tps, recompute_tps = n / wall1, n / recompute_s
    print(f"one stream, KV cache      : {cached_tps:8.1f} tok/s")
    print(f"one stream, recompute     : {recompute_tps:8.1f} tok/s")
    print(f"  -> KV cache speed-up    : {cached_tps / recompute_tps:8.2f}x (goal >= 5x; greedy tokens agreeing: {agree:.0%})")

    wall_c, many = run_clients(timed_request, engine, prompts, n)
    total = sum(len(r["ids"]) for r in many)
    batched_tps = total / wall_c
    print(f"{args.clients} concurrent clients    : {batched_tps:8.1f} tok/s total ({total} tokens in {wall_c:.2f} s)")
    print(f"  -> batching speed-up    : {batched_tps / cached_tps:8.2f}x over one client (goal >= 3x)")
    stats = latency_stats(many)
    for name, values in stats.items():
        print(f"{name:8s} " + "  ".join(f"{k} {v:8.2f}" for k, v in values.items()))
    engine.stop()
    if args.json:
        figures = {"preset": args.preset, "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
                   "new_tokens": n, "clients": args.clients, "cached_tok_s": cached_tps, "recompute_tok_s": recompute_tps,
                   "kv_speedup": cached_tps / recompute_tps, "batched_tok_s": batched_tps,
                   "batching_speedup": batched_tps / cached_tps, "latency": stats, "greedy_agreement": agree}
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
