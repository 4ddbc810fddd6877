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


def test_malformed_bodies_get_openai_errors(server):
    headers = {**server.auth, "Content-Type": "application/json"}
    url = server.base + "/v1/completions"
    bad_json = httpx.post(url, content=b"{not json", headers=headers, timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    missing = httpx.post(url, json={"max_tokens": 3}, headers=headers, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"
    wrong_type = httpx.post(url, json={"prompt": "x", "temperature": "hot"}, headers=headers, timeout=10)
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "temperature"
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


def _metrics(server) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.base + "/metrics", headers=server.auth, timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_count_requests_tokens_and_queue(server):
    before = _metrics(server)
    out = server.client().completions.create(model="tiny-test", prompt="each step", max_tokens=3, temperature=0)
    assert httpx.get(server.base + "/metrics", timeout=10).status_code == 401
    after = _metrics(server)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("auroragpt_requests_total{route=/v1/completions,status=200}") == 1
    assert delta("auroragpt_requests_total{route=/metrics,status=401}") == 1
    assert delta("auroragpt_requests_total{route=/metrics,status=200}") == 1  # the first scrape, counted once answered
    assert delta("auroragpt_prompt_tokens_total") == out.usage.prompt_tokens > 0
    assert delta("auroragpt_generation_tokens_total") == out.usage.completion_tokens > 0
    assert delta("auroragpt_engine_generated_tokens") == out.usage.completion_tokens
    assert delta("auroragpt_engine_decode_steps") == out.usage.completion_tokens - 1  # the first comes from prefill
    assert delta("auroragpt_request_latency_seconds_count{route=/v1/completions}") == 1
    assert delta("auroragpt_time_to_first_token_seconds_count") == 1
    assert delta("auroragpt_abandoned_requests_total") == 0
    assert after["auroragpt_queue_depth"] == 0 and after["auroragpt_running_requests"] == 0


def test_a_client_that_hangs_up_frees_its_slot(server):
    before = _metrics(server)
    body = {"prompt": "the quick brown", "max_tokens": 200, "stream": True, "ignore_eos": True, "temperature": 0}
    with httpx.stream("POST", server.base + "/v1/completions", headers=server.auth, json=body, timeout=30) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = _metrics(server)
        if after["auroragpt_abandoned_requests_total"] > before["auroragpt_abandoned_requests_total"] \
                and after["auroragpt_running_requests"] == 0:
            break
        time.sleep(0.05)
    assert after["auroragpt_abandoned_requests_total"] - before["auroragpt_abandoned_requests_total"] == 1
    assert after["auroragpt_running_requests"] == 0
    generated = after["auroragpt_engine_generated_tokens"] - before["auroragpt_engine_generated_tokens"]
    assert 1 <= generated < 200  # 200 asked; the engine stopped when the client left
    counted = after["auroragpt_generation_tokens_total"] - before["auroragpt_generation_tokens_total"]
    assert 1 <= counted <= generated


def _post(server, path: str, content: str | bytes, method: str = "POST") -> httpx.Response:
    return httpx.request(method, server.base + path, content=content, timeout=30,
                         headers={**server.auth, "Content-Type": "application/json"})


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deeply_nested_json_is_a_400(server, depth):
    deep = "[" * depth + "]" * depth
    bodies = {"/v1/completions": '{"prompt": "hi", "stop": %s}', "/v1/chat/completions": '{"messages": %s}',
              "/v1/batches": '{"input_file_id": %s, "endpoint": "/v1/completions"}'}
    for path, template in bodies.items():
        answer = _post(server, path, template % deep)
        assert answer.status_code == 400, (path, answer.text[:200])
        assert answer.json()["error"]["code"] == "invalid_json" and "deeper" in answer.json()["error"]["message"]
    for constant in ("NaN", "Infinity"):
        answer = _post(server, "/v1/completions", '{"prompt": "hi", "temperature": %s}' % constant)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("path, base", [("/v1/completions", {"prompt": "hi"}),
                                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})])
def test_types_are_strict_as_in_the_openai_api(server, path, base):
    refused = [("max_tokens", "4"), ("max_tokens", True), ("max_tokens", 4.5), ("temperature", "0.5"),
               ("temperature", True), ("top_p", "1"), ("stream", "true"), ("seed", "1"), ("seed", 2 ** 64),
               ("seed", -(2 ** 63) - 1)]
    for field, value in refused:
        answer = _post(server, path, json.dumps({**base, field: value}))
        assert answer.status_code == 400, (field, value, answer.text)
        assert answer.json()["error"]["param"] == field
    seed = _post(server, path, json.dumps({**base, "seed": 2 ** 64}))
    assert "seed must be an integer in" in seed.json()["error"]["message"]
    assert "overflow" not in seed.text.lower()
    for field, value in [("max_tokens", 4), ("temperature", 1), ("seed", 2 ** 64 - 1), ("seed", -(2 ** 63))]:
        answer = _post(server, path, json.dumps({**base, field: value, "max_tokens": 4}))
        assert answer.status_code == 200, (field, value, answer.text)


def test_wrong_method_gets_allow_and_missing_key_gets_www_authenticate(server):
    for method, path, allowed in [("PUT", "/v1/files", {"GET", "POST"}), ("GET", "/v1/completions", {"POST"}),
                                  ("PATCH", "/v1/files/file-x", {"GET", "DELETE"})]:
        answer = _post(server, path, b"", method=method)
        assert answer.status_code == 405
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed
        assert answer.json()["error"]["code"] == "method_not_allowed"
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        answer = httpx.get(server.base + "/v1/models", headers=headers, timeout=10)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")


def test_files_list_and_delete_with_the_openai_client(server, tmp_path):
    client = server.client(max_retries=0)
    path = tmp_path / "f.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "hi"}}\n')
    first = client.files.create(file=path.open("rb"), purpose="batch")
    second = client.files.create(file=path.open("rb"), purpose="batch")
    listed = [f.id for f in client.files.list()]
    assert first.id in listed and second.id in listed
    assert listed.index(second.id) < listed.index(first.id)  # newest first
    assert [f.id for f in client.files.list(purpose="batch_output") if f.id in (first.id, second.id)] == []
    deleted = client.files.delete(first.id)
    assert deleted.deleted and deleted.id == first.id
    assert first.id not in [f.id for f in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(first.id)
    assert client.files.content(second.id).text == path.read_text()


def test_extreme_sampling_values_in_a_batch_and_live_are_greedy(server, reference, tmp_path):
    extremes = [{"temperature": 1e-38}, {"temperature": 5e-324, "top_p": 1e-300}, {"temperature": 1.5, "top_p": 1e-300}, {}]
    lines = [{"custom_id": f"x{i}", "method": "POST", "url": "/v1/completions",
              "body": {"prompt": "the lazy dog", "max_tokens": 8, "temperature": 0, **extra}} for i, extra in enumerate(extremes)]
    path = tmp_path / "extreme.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = server.client()
    batch = client.batches.create(input_file_id=client.files.create(file=path.open("rb"), purpose="batch").id,
                                  endpoint="/v1/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert (batch.status, batch.request_counts.completed, batch.request_counts.failed) == ("completed", 4, 0)
    text, _ = reference("the lazy dog", 8)
    for line in client.files.content(batch.output_file_id).text.splitlines():
        assert json.loads(line)["response"]["body"]["choices"][0]["text"] == text
    live = client.completions.create(model="tiny-test", prompt="the lazy dog", max_tokens=8, temperature=1e-38, top_p=1e-300)
    assert live.choices[0].text == text
