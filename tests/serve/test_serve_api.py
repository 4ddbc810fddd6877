"""The official `openai` client against a real `auroragpt serve` process on 127.0.0.1."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

PROMPTS = [
    "the quick brown", "a model reads", "servers answer", "def add(a, b):", "keys and values", "fox 7",
    "one at a time", "the lazy dog", "tokens 3", "return a", "batching their", "each step",
    "clients at once", "writes tokens", "over the", "cached so",
]


def test_health_is_open_and_models_need_a_key(server):
    assert httpx.get(server.base + "/health", timeout=10).json()["status"] == "ok"
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny-test"]
    assert httpx.get(server.base + "/v1/models", timeout=10).status_code == 401


def test_completion_is_the_greedy_continuation(server, reference):
    text, ids = reference("the quick brown", 20)
    out = server.client().completions.create(model="tiny-test", prompt="the quick brown", max_tokens=20, temperature=0)
    assert out.choices[0].text == text
    assert out.usage.completion_tokens == len(ids)
    assert out.usage.prompt_tokens == len(reference.tokenizer.encode("the quick brown"))
    assert out.choices[0].finish_reason == ("length" if len(ids) == 20 else "stop")


def test_chat_uses_the_default_template(server, reference):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the lazy dog"}]
    rendered = "<|system|>\nbe brief\n<|user|>\nthe lazy dog\n<|assistant|>\n"
    text, _ = reference(rendered, 16)
    out = server.client().chat.completions.create(model="tiny-test", messages=messages, max_tokens=16, temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == text


def test_streaming_completion_and_chat(server, reference):
    text, ids = reference("a model reads", 24)
    client = server.client()
    chunks = list(client.completions.create(model="tiny-test", prompt="a model reads", max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == len(ids)
    assert chunks[-2].choices[0].finish_reason in ("length", "stop")
    rendered = "<|user|>\nfox 7\n<|assistant|>\n"
    chat_text, _ = reference(rendered, 12)
    stream = client.chat.completions.create(model="tiny-test", messages=[{"role": "user", "content": "fox 7"}],
                                            max_tokens=12, temperature=0, stream=True)
    deltas = [c.choices[0].delta for c in stream]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == chat_text
    # The raw event stream ends with the [DONE] sentinel.
    with httpx.stream("POST", server.base + "/v1/completions", headers=server.auth,
                      json={"prompt": "over the", "max_tokens": 4, "stream": True}, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_wrong_or_missing_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as err:
        server.client(key="sk-wrong").completions.create(model="tiny-test", prompt="hi", max_tokens=2)
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"
    assert httpx.post(server.base + "/v1/completions", json={"prompt": "hi"}, timeout=10).status_code == 401


def test_over_the_rate_limit_is_429_with_retry_after(servers):
    main, limited = servers
    client = limited.client(max_retries=0)
    client.completions.create(model="tiny-test", prompt="the quick brown", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as err:
        client.completions.create(model="tiny-test", prompt="the quick brown", max_tokens=2)
    assert int(err.value.response.headers["retry-after"]) >= 1
    time.sleep(2.1)  # the request bucket (0.5/s) refills; the token bucket (250/min) funds one 150-token request...
    client.completions.create(model="tiny-test", prompt="the quick brown", max_tokens=150)
    time.sleep(2.1)
    with pytest.raises(openai.RateLimitError) as err:  # ...but not a second one
        client.completions.create(model="tiny-test", prompt="the quick brown", max_tokens=150)
    assert int(err.value.response.headers["retry-after"]) > 2
    with pytest.raises(openai.AuthenticationError):
        limited.client(key=main.key, max_retries=0).models.list()


def test_malformed_bodies_get_openai_errors(server):
    headers = {**server.auth, "Content-Type": "application/json"}
    url = server.base + "/v1/completions"
    bad_json = httpx.post(url, content=b"{not json", headers=headers, timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    missing = httpx.post(url, json={"max_tokens": 3}, headers=headers, timeout=10)
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "prompt"
    wrong_type = httpx.post(url, json={"prompt": "x", "temperature": "hot"}, headers=headers, timeout=10)
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["param"] == "temperature"
    too_big = httpx.post(url, content=b"{" + b" " * (2 << 20) + b"}", headers=headers, timeout=10)
    assert too_big.status_code == 413

    def chunked():  # no Content-Length: the cap must hold while the body streams in
        yield b"{"
        for _ in range(40):
            yield b" " * (64 << 10)
        yield b"}"

    streamed = httpx.post(url, content=chunked(), headers=headers, timeout=10)
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    boundary = "b0undary"

    def chunked_upload():  # a 2.5 MiB batch file against --max-file-bytes 1 MiB, without Content-Length
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n"
               'Content-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\n').encode()
        for _ in range(40):
            yield b"x" * (64 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()

    upload = httpx.post(server.base + "/v1/files", content=chunked_upload(), timeout=10,
                        headers={**server.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert upload.status_code == 413, upload.text
    client = server.client(max_retries=0)
    with pytest.raises(openai.BadRequestError, match="cap of 200"):
        client.completions.create(model="tiny-test", prompt="hi", max_tokens=201)
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.completions.create(model="tiny-test", prompt="hi", max_tokens=2, n=2)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="tiny-test", prompt="fox " * 300, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=2)


def test_sixteen_concurrent_clients_get_their_greedy_answers(server, reference):
    expected = [reference(p, 16 + i % 5)[0] for i, p in enumerate(PROMPTS)]
    client = server.client()

    def ask(i: int) -> str:
        return client.completions.create(model="tiny-test", prompt=PROMPTS[i], max_tokens=16 + i % 5, temperature=0).choices[0].text

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(16), timeout=60))
    assert answers == expected
    assert time.monotonic() - start < 60


def test_sampling_is_seeded_and_stops_at_stop_sequences(server, reference):
    client = server.client()
    args = dict(model="tiny-test", prompt="keys and values", max_tokens=20, temperature=0.9, top_p=0.9, seed=1234)
    first = client.completions.create(**args).choices[0].text
    assert client.completions.create(**args).choices[0].text == first
    topk = client.completions.create(**args, extra_body={"top_k": 5})
    assert topk.choices[0].text
    text, _ = reference("keys and values", 20)
    stop = text[6:9]
    cut = text[: text.find(stop)]
    out = client.completions.create(model="tiny-test", prompt="keys and values", max_tokens=20, temperature=0, stop=[stop])
    assert out.choices[0].text == cut and out.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny-test", prompt="keys and values", max_tokens=20, temperature=0,
                                         stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_batch_job_end_to_end(server, reference, tmp_path):
    lines = []
    for i, prompt in enumerate(PROMPTS[:4]):
        body = {"model": "tiny-test", "messages": [{"role": "user", "content": prompt}], "max_tokens": 10, "temperature": 0}
        lines.append({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    lines.append({"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}})
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = server.client()
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (5, 4, 1)
    results = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    by_id = {r["custom_id"]: r for r in results}
    for i, prompt in enumerate(PROMPTS[:4]):
        text, _ = reference(f"<|user|>\n{prompt}\n<|assistant|>\n", 10)
        response = by_id[f"req-{i}"]["response"]
        assert response["status_code"] == 200
        assert response["body"]["choices"][0]["message"]["content"] == text
    errors = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "too-long" and errors[0]["response"]["status_code"] == 400
    assert client.batches.list().data[0].id == batch.id


def test_metrics_count_requests_tokens_and_queue(server):
    server.client().completions.create(model="tiny-test", prompt="each step", max_tokens=3, temperature=0)
    assert httpx.get(server.base + "/metrics", timeout=10).status_code == 401
    text = httpx.get(server.base + "/metrics", headers=server.auth, timeout=10).text
    for name in ("auroragpt_requests_total", "auroragpt_generation_tokens_total", "auroragpt_queue_depth",
                 "auroragpt_time_to_first_token_seconds_bucket", "auroragpt_request_latency_seconds_count"):
        assert name in text


def test_a_client_that_hangs_up_frees_its_slot(server):
    headers = server.auth
    body = {"prompt": "the quick brown", "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.base + "/v1/completions", headers=headers, json=body, timeout=30) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = httpx.get(server.base + "/metrics", headers=headers, timeout=10).text
        health = httpx.get(server.base + "/health", timeout=10).json()
        if "auroragpt_abandoned_requests_total 1.0" in metrics and health["running"] == 0:
            break
        time.sleep(0.05)
    assert "auroragpt_abandoned_requests_total 1.0" in metrics
    assert health["running"] == 0
