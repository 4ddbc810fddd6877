"""Keys, rate limits, the engine's batching and the CLI's refusals, without HTTP."""

from __future__ import annotations

import hashlib
import queue
import threading
import time

import pytest
import torch

from auroragpt.cli import main
from auroragpt.errors import ConfigError
from auroragpt.serve.auth import KeyChecker, bearer_token, hash_key, read_keys_file
from auroragpt.serve.engine import Engine, SamplingParams
from auroragpt.serve.ratelimit import RateLimiter


def test_hash_key_cli_prints_the_keys_file_line(capsys):
    assert main(["serve", "--hash-key", "sk-abc"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"sk-abc").hexdigest()


def test_keys_file_and_env_keys(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n\n{hash_key('alpha')}\n")
    monkeypatch.setenv("AURORAGPT_API_KEYS", "beta, gamma")
    checker = KeyChecker.from_sources(keys)
    assert checker.identify("alpha") == hash_key("alpha")
    assert checker.identify("gamma") == hash_key("gamma")
    assert checker.identify("delta") is None
    assert bearer_token("Bearer  tok ") == "tok" and bearer_token("Basic tok") is None and bearer_token(None) is None
    keys.write_text(f"{hash_key('alpha')}\nalpha\n")
    with pytest.raises(ConfigError, match=r"keys:2: not a SHA-256"):
        read_keys_file(keys)


def test_rate_limiter_buckets_refill_and_tell_when_to_retry():
    now = [0.0]
    limiter = RateLimiter(requests_per_s=2, tokens_per_min=120, clock=lambda: now[0])
    assert limiter.acquire("k", 10) == 0 and limiter.acquire("k", 10) == 0
    assert limiter.acquire("k", 10) == 1  # third request within the second
    assert limiter.acquire("other", 10) == 0  # keys are independent
    now[0] = 1.0
    assert limiter.acquire("k", 100) == 0  # 100 + 2 refilled tokens available: 2 left
    now[0] = 2.0
    assert limiter.acquire("k", 50) == 23  # 4 tokens available, 46 missing at 2 per second
    assert limiter.too_large(121) and not limiter.too_large(120)
    assert RateLimiter().acquire("k", 10 ** 9) == 0


class _CharTokenizer:
    """One token per byte value; id 0 ends a document."""

    eod_id = 0
    vocab_size = 64

    def encode(self, text: str) -> list[int]:
        return [1 + (ord(c) % 63) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(ord("A") + i % 26) for i in ids)


@pytest.fixture(scope="module")
def tiny_engine():
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import ModelConfig

    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=64, max_seq_len=64)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(1))
    with torch.no_grad():  # peaked attention, so positions and masks visibly change the answer
        for block in model.layers.values():
            block.attention.wq.weight.mul_(30)
            block.attention.wk.weight.mul_(30)
    model = model.double().eval()
    model.reset_rotary()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a shared CI machine
    engine = Engine(model, _CharTokenizer(), max_batch=3, max_seq_len=48).start()
    yield engine
    engine.stop()
    torch.set_num_threads(threads)


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out]))[0, -1].argmax())
            if nxt == 0:
                break
            out.append(nxt)
    return out


def test_engine_batches_more_requests_than_slots_and_matches_recompute(tiny_engine):
    prompts = [[(7 * i + j) % 60 + 1 for j in range(3 + i)] for i in range(7)]  # 7 requests, 3 slots
    results: list = [None] * len(prompts)

    def go(i: int) -> None:
        results[i] = tiny_engine.generate(prompts[i], SamplingParams(max_tokens=5 + 2 * i, temperature=0), timeout_s=60)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, prompt in enumerate(prompts):
        assert results[i].token_ids == _greedy(tiny_engine.model, prompt, 5 + 2 * i)
    assert tiny_engine.num_running == 0 and tiny_engine.queue_depth == 0


def test_prompts_prefilled_in_chunks_match_recompute(tiny_engine):
    engine = Engine(tiny_engine.model, _CharTokenizer(), max_batch=2, max_seq_len=48, prefill_chunk=4).start()
    try:
        prompt = [(5 * j) % 60 + 1 for j in range(11)]  # three chunks: 4 + 4 + 3
        done = engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0), timeout_s=60)
    finally:
        engine.stop()
    assert done.token_ids == _greedy(tiny_engine.model, prompt, 8)


def test_one_token_requests_finish_at_admission(tiny_engine):
    events = list(tiny_engine.stream([3, 4, 5], SamplingParams(max_tokens=1, temperature=0)))
    assert len(events) == 1 and events[0].finished and events[0].completion_tokens == 1
    again = tiny_engine.generate([3, 4, 5], SamplingParams(max_tokens=1, temperature=0), timeout_s=60)
    assert again.token_ids == events[0].token_ids == _greedy(tiny_engine.model, [3, 4, 5], 1)


def test_end_of_document_as_first_token_leaves_the_batch_healthy(tiny_engine):
    model = tiny_engine.model
    with torch.no_grad():
        first = int(model(torch.tensor([[3, 4, 5]]))[0, -1].argmax())
    tokenizer = _CharTokenizer()
    tokenizer.eod_id = first  # this prompt's first greedy token now ends the document
    engine = Engine(model, tokenizer, max_batch=3).start()  # a free slot left after both are admitted
    entered, release = threading.Event(), threading.Event()
    long_events: queue.Queue = queue.Queue()
    short_events: queue.Queue = queue.Queue()

    def long_sink(event) -> None:
        entered.set()
        release.wait(10)  # hold the engine until the short request waits behind this one
        long_events.put(event)

    try:
        engine.submit([9, 8], SamplingParams(max_tokens=30, temperature=0, ignore_eos=True), long_sink)
        assert entered.wait(10)
        engine.submit([3, 4, 5], SamplingParams(max_tokens=5, temperature=0), short_events.put)
        release.set()
        short = short_events.get(timeout=30)
        longs = [long_events.get(timeout=30)]
        while not longs[-1].finished:
            longs.append(long_events.get(timeout=30))
    finally:
        engine.stop()
    assert short.finished and short.token_ids == [] and short.finish_reason == "stop"
    assert longs[-1].error is None and longs[-1].completion_tokens == 30


def test_engine_refuses_what_does_not_fit(tiny_engine):
    with pytest.raises(ValueError, match="context window"):
        tiny_engine.submit([1] * 40, SamplingParams(max_tokens=10), lambda e: None)
    with pytest.raises(ValueError, match="top_p"):
        tiny_engine.submit([1], SamplingParams(top_p=0), lambda e: None)


def _wait_idle(engine, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (engine.num_running or engine.queue_depth) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.num_running == 0 and engine.queue_depth == 0


def test_cancel_stops_generation_and_frees_the_slot(tiny_engine):
    events: queue.Queue = queue.Queue()
    release = threading.Event()

    def sink(event) -> None:  # holds the engine after the first token until the test has cancelled
        events.put(event)
        release.wait(10)

    handle = tiny_engine.submit([5, 6, 7], SamplingParams(max_tokens=40, temperature=1.0, seed=3, ignore_eos=True), sink)
    first = events.get(timeout=30)
    handle.cancel()
    release.set()
    _wait_idle(tiny_engine)
    assert not first.finished
    assert handle.completion_tokens < 40 and handle.completion_tokens <= 2  # 40 asked; it stopped at once
    while not events.empty():
        assert not events.get().finished  # a cancelled request gets no final event
    done = tiny_engine.generate([5, 6], SamplingParams(max_tokens=3, temperature=0), timeout_s=60)
    assert done.token_ids == _greedy(tiny_engine.model, [5, 6], 3)  # the slot is usable again


@pytest.mark.parametrize("temperature, top_p", [(1e-38, 1.0), (1e-300, 1.0), (5e-324, 1e-300), (1.0, 1e-300), (2.0, 5e-324)])
def test_extreme_sampling_values_are_greedy_and_harm_no_one(tiny_engine, temperature, top_p):
    prompts = [[3, 4, 5], [9, 8, 7, 6]]
    results: list = [None, None]

    def go(i: int, params: SamplingParams) -> None:
        results[i] = tiny_engine.generate(prompts[i], params, timeout_s=60)

    threads = [threading.Thread(target=go, args=(0, SamplingParams(max_tokens=12, temperature=temperature, top_p=top_p, seed=5))),
               threading.Thread(target=go, args=(1, SamplingParams(max_tokens=12, temperature=0)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results[0].token_ids == _greedy(tiny_engine.model, prompts[0], 12)
    assert results[1].token_ids == _greedy(tiny_engine.model, prompts[1], 12)


def test_a_request_that_cannot_be_sampled_fails_alone(tiny_engine, monkeypatch):
    import auroragpt.serve.engine as engine_module
    from auroragpt.model.sampling import SamplingError

    real = engine_module.sample_next

    def poisoned(logits, temperature, *args, **kwargs):
        if temperature == 0.625:
            raise SamplingError("poisoned for the test")
        return real(logits, temperature, *args, **kwargs)

    monkeypatch.setattr(engine_module, "sample_next", poisoned)
    bad: queue.Queue = queue.Queue()
    good: queue.Queue = queue.Queue()
    gate = threading.Event()

    def good_sink(event) -> None:
        gate.wait(10)  # the bad request is admitted while this one is running
        good.put(event)

    tiny_engine.submit([9, 8], SamplingParams(max_tokens=20, temperature=0.5, seed=1, ignore_eos=True), good_sink)
    tiny_engine.submit([3, 4], SamplingParams(max_tokens=20, temperature=0.625, seed=1), bad.put)
    gate.set()
    failed = bad.get(timeout=30)
    assert failed.finished and failed.finish_reason == "error" and "poisoned" in failed.error
    events = [good.get(timeout=30)]
    while not events[-1].finished:
        events.append(good.get(timeout=30))
    assert events[-1].error is None and events[-1].completion_tokens == 20


def test_vllm_engine_needs_vllm_and_a_gpu(tmp_path, capsys):
    code = main(["serve", str(tmp_path), "--engine", "vllm"])
    assert code == 2
    assert "vllm" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["native", "vllm"])
def test_serve_refuses_a_public_address_without_keys(tmp_path, capsys, monkeypatch, engine):
    monkeypatch.delenv("AURORAGPT_API_KEYS", raising=False)
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--engine", engine]) == 2
    assert "without API keys" in capsys.readouterr().err  # before any engine-specific check


def test_vllm_serves_under_the_same_model_name_rule(tmp_path):
    import argparse

    from auroragpt.serve.server import default_model_name
    from auroragpt.serve.vllm_engine import vllm_command

    step = tmp_path / "demo" / "checkpoints" / "step_00000600"
    step.mkdir(parents=True)
    args = argparse.Namespace(path=str(step), host="127.0.0.1", port=8000, model_name=None, max_batch=8, dtype=None,
                              max_model_len=None)
    cmd = vllm_command(args)
    assert cmd[cmd.index("--served-model-name") + 1] == default_model_name(str(step)) == "demo-step_00000600"


def test_temporary_state_folder_is_removed_at_shutdown(tmp_path):
    """Without --state-dir the server keeps batch files in a temporary folder; it must not outlive it."""
    from fastapi.testclient import TestClient

    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import ModelConfig
    from auroragpt.serve.app import ServerSettings, create_app

    model = GPT(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=32, vocab_size=64, max_seq_len=32))
    model.init_weights(torch.Generator().manual_seed(0))
    app = create_app(Engine(model.eval(), _CharTokenizer(), max_batch=1, max_seq_len=32), _CharTokenizer(),
                     ServerSettings(model_name="t"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        state = app.state.store.dir
        assert state.is_dir()
    assert not state.exists()
    kept = tmp_path / "state"
    app = create_app(Engine(model.eval(), _CharTokenizer(), max_batch=1, max_seq_len=32), _CharTokenizer(),
                     ServerSettings(model_name="t", state_dir=str(kept)))
    with TestClient(app):
        pass
    assert kept.is_dir()  # a folder the user named is theirs


def test_bad_or_busy_port_is_refused_before_the_model_loads(tmp_path, capsys):
    import socket

    assert main(["serve", str(tmp_path / "no-model-needed"), "--port", "99999"]) == 2
    assert "--port 99999 is not a TCP port" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-model-needed"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_chat_templates_get_special_tokens_and_the_default_stops_at_the_next_turn(tmp_path):
    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.serve import protocol

    tok = train_bpe(["hello world " * 50], 300, tmp_path / "tok.json")
    specials = protocol.special_tokens(tok)
    assert specials["eos_token"] == tok.backend.id_to_token(tok.eod_id)
    llama_like = protocol.chat_renderer("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}",
                                        bos_token="<s>", **{k: v for k, v in specials.items() if k != "bos_token"})
    assert llama_like([{"role": "user", "content": "hi"}]) == f"<s>hi{specials['eos_token']}"
    assert llama_like.stops == ()
    default = protocol.chat_renderer(None)
    assert default([{"role": "user", "content": "hi"}]) == "<|user|>\nhi\n<|assistant|>\n"
    assert "<|user|>" in default.stops


def test_default_model_name_names_the_run_for_a_step_folder(tmp_path):
    from auroragpt.serve.server import default_model_name

    step = tmp_path / "demo" / "checkpoints" / "step_00000600"
    step.mkdir(parents=True)
    assert default_model_name(str(step)) == "demo-step_00000600"
    assert default_model_name(str(tmp_path / "demo")) == "demo"
    assert default_model_name(str(tmp_path / "demo") + "/") == "demo"
