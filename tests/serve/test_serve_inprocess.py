"""The app in-process, where the test controls what a subprocess cannot: the rate limiter's clock,
a slow model (to hang up mid-request), big prompts (to time /health meanwhile)."""

from __future__ import annotations

import math
import threading
import time

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import KEY, ThreadServer, make_app

from auroragpt.serve.ratelimit import RateLimiter

AUTH = {"Authorization": f"Bearer {KEY}"}


def metric(app, name: str, **labels) -> float:
    for family in text_string_to_metric_families(app.state.server.metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class SlowModel(torch.nn.Module):
    """The test model, `delay_s` slower per forward call, so a request takes long enough to abandon."""

    def __init__(self, inner: torch.nn.Module, delay_s: float) -> None:
        super().__init__()
        self.inner, self.cfg, self.delay_s = inner, inner.cfg, delay_s

    def forward(self, *args):
        time.sleep(self.delay_s)
        return self.inner(*args)


def test_over_the_rate_limit_is_429_with_retry_after_on_a_fake_clock(loaded, tmp_path):
    now = [0.0]
    tpm = 250
    app = make_app(*loaded, tmp_path, limiter=RateLimiter(requests_per_s=0.5, tokens_per_min=tpm, clock=lambda: now[0]))
    prompt = "the quick brown"
    p = len(loaded[1].encode(prompt))
    with TestClient(app) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)
        client.completions.create(model="tiny-test", prompt=prompt, max_tokens=2)
        with pytest.raises(openai.RateLimitError) as err:  # the request bucket (0.5/s) is empty
            client.completions.create(model="tiny-test", prompt=prompt, max_tokens=2)
        assert err.value.response.headers["retry-after"] == "2"
        now[0] += 2.0  # the request bucket refills; the token bucket is full again too
        client.completions.create(model="tiny-test", prompt=prompt, max_tokens=150)
        now[0] += 2.0
        with pytest.raises(openai.RateLimitError) as err:  # the token bucket cannot fund a second one yet
            client.completions.create(model="tiny-test", prompt=prompt, max_tokens=150)
        level = tpm - (150 + p) + 2.0 * tpm / 60
        assert err.value.response.headers["retry-after"] == str(math.ceil((150 + p - level) / (tpm / 60)))
        now[0] += 60.0
        client.completions.create(model="tiny-test", prompt=prompt, max_tokens=150)
        with pytest.raises(openai.BadRequestError, match="tokens/min"):  # can never fit in a minute
            big = "x " * 60
            client.completions.create(model="tiny-test", prompt=big, max_tokens=tpm + 1 - len(loaded[1].encode(big)))
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url="http://testserver/v1", api_key="sk-other", http_client=http, max_retries=0).models.list()


def test_a_non_streamed_request_whose_client_hangs_up_is_cancelled(loaded, tmp_path):
    model, tokenizer = loaded
    app = make_app(SlowModel(model, 0.02), tokenizer, tmp_path)
    engine = app.state.engine
    body = {"prompt": "the quick brown", "max_tokens": 150, "temperature": 0, "ignore_eos": True}
    with ThreadServer(app) as server:
        with pytest.raises(httpx.ReadTimeout):  # 150 tokens take >= 3 s; the client leaves after 0.5 s
            httpx.post(server.base + "/v1/completions", json=body, headers=AUTH, timeout=httpx.Timeout(10, read=0.5))
        left = time.monotonic()
        while engine.num_running and time.monotonic() - left < 10:
            time.sleep(0.01)
        stopped_after = time.monotonic() - left
    assert engine.num_running == 0 and stopped_after < 1.5
    assert metric(app, "auroragpt_abandoned_requests_total") == 1
    generated = metric(app, "auroragpt_generation_tokens_total")
    assert 1 <= generated <= engine.tokens_generated < 150  # it stopped once the client was gone


class GatedTokenizer:
    """The test tokenizer, whose encoding waits at a gate (as a megabyte prompt keeps a BPE busy)."""

    def __init__(self, inner) -> None:
        self.inner, self.gate, self.entered = inner, threading.Event(), threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_batch(self, texts):
        self.entered.release()
        self.gate.wait(30)
        return self.inner.encode_batch(texts)


def _poll_health(base: str, until) -> list[float]:
    delays = []
    with httpx.Client(base_url=base, timeout=5) as health:
        health.get("/health")  # connection made before timing
        while not until():
            start = time.perf_counter()
            assert health.get("/health").status_code == 200
            delays.append(time.perf_counter() - start)
            time.sleep(0.01)
    return delays


def test_health_answers_while_prompts_are_being_tokenized(loaded, tmp_path):
    model, tokenizer = loaded
    gated = GatedTokenizer(tokenizer)
    app = make_app(model, gated, tmp_path)
    answers: list = []
    with ThreadServer(app) as server:
        def post(i: int) -> None:
            answers.append(httpx.post(server.base + "/v1/completions", headers=AUTH, timeout=60,
                                      json={"prompt": f"the quick brown {i}", "max_tokens": 2, "temperature": 0}))

        posts = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in posts:
            t.start()
        for _ in posts:  # all four are inside the tokenizer now
            assert gated.entered.acquire(timeout=30)
        started = time.monotonic()
        delays = _poll_health(server.base, until=lambda: time.monotonic() - started > 1.0)
        gated.gate.set()
        for t in posts:
            t.join(timeout=60)
    assert [a.status_code for a in answers] == [200] * 4
    assert len(delays) >= 3 and max(delays) < 0.5, delays  # tokenizing on the loop would hang /health here


def test_health_stays_responsive_while_big_prompts_are_tokenized(loaded, tmp_path):
    """The issue's case with the real BPE: four 1 MiB prompts; /health answered in < 0.2 s (median)."""
    app = make_app(*loaded, tmp_path, max_body_bytes=4 << 20)
    prompt = ("the quick brown fox jumps over the lazy dog 7 " * 30000)[: 1 << 20]
    answers: list = []
    with ThreadServer(app) as server:
        def post() -> None:
            answers.append(httpx.post(server.base + "/v1/completions", json={"prompt": prompt, "max_tokens": 1},
                                      headers=AUTH, timeout=120))

        posts = [threading.Thread(target=post) for _ in range(4)]
        for t in posts:
            t.start()
        delays = _poll_health(server.base, until=lambda: not any(t.is_alive() for t in posts))
        for t in posts:
            t.join()
    assert [a.status_code for a in answers] == [400] * 4  # tokenized, then too long for the context
    assert all(a.json()["error"]["code"] == "context_length_exceeded" for a in answers)
    delays.sort()
    # The median, not the maximum: on a shared 2-core machine the OS alone can delay one call now
    # and then, while a loop held by tokenization (seconds per prompt) delays nearly every call.
    assert delays[len(delays) // 2] < 0.2, f"/health delays while tokenizing: {[round(d, 3) for d in delays]}"
    assert len(delays) >= 5, "the prompts were tokenized too fast to measure anything"


def test_a_batch_line_that_fails_fails_alone(loaded, tmp_path, monkeypatch):
    import json

    import auroragpt.serve.engine as engine_module
    from auroragpt.model.sampling import SamplingError

    real = engine_module.sample_next

    def poisoned(logits, temperature, *args, **kwargs):
        if temperature == 0.625:
            raise SamplingError("poisoned for the test")
        return real(logits, temperature, *args, **kwargs)

    monkeypatch.setattr(engine_module, "sample_next", poisoned)
    temperatures = [0, 0.625, 0.5, 0]
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
              "body": {"prompt": "the quick brown", "max_tokens": 6, "temperature": t, "seed": 1}}
             for i, t in enumerate(temperatures)]
    deep = '{"custom_id": "deep", "method": "POST", "url": "/v1/completions", "body": ' + "[" * 5000 + "]" * 5000 + "}"
    app = make_app(*loaded, tmp_path)
    with TestClient(app) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)

        def run(text: str):
            file = client.files.create(file=("in.jsonl", text.encode()), purpose="batch")
            batch = client.batches.create(input_file_id=file.id, endpoint="/v1/completions", completion_window="24h")
            deadline = time.monotonic() + 60
            while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
                time.sleep(0.05)
                batch = client.batches.retrieve(batch.id)
            return batch

        batch = run("".join(json.dumps(line) + "\n" for line in lines))
        assert (batch.status, batch.request_counts.completed, batch.request_counts.failed) == ("completed", 3, 1)
        errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
        assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("r1", 500)]
        assert "poisoned" in errors[0]["response"]["body"]["error"]["message"]
        done = {json.loads(x)["custom_id"] for x in client.files.content(batch.output_file_id).text.splitlines()}
        assert done == {"r0", "r2", "r3"}
        refused = run(json.dumps(lines[0]) + "\n" + deep + "\n")  # a line nested too deep: refused, naming it
        assert refused.status == "failed" and "line 2" in refused.errors.data[0].message
