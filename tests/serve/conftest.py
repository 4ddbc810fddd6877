"""Fixtures for the serving tests: a tiny model folder with a local BPE tokenizer, real servers, in-process apps.

The servers run in float64 so that batched decoding and the single-sequence reference agree on
every greedy choice (float32 round-off could flip a near tie in an untrained model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from serve_helpers import KEY, free_port

CONTEXT = 256

_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a model reads tokens and writes tokens one at a time",
    "servers answer many clients at once by batching their steps",
    "def add(a, b):\n    return a + b\n",
    "keys and values are cached so each step costs one token",
]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.model.gpt import GPT
    from auroragpt.model.io import save_model
    from auroragpt.model.presets import get_preset

    root = tmp_path_factory.mktemp("serve_model")
    texts = [f"{s} {i}" for i in range(40) for s in _SENTENCES]
    tok = train_bpe(texts, 320, root / "tok" / "tokenizer.json", min_frequency=1)
    cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=CONTEXT)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():  # peaked attention: positions and masks change the answer, so tests see them
        for block in model.layers.values():
            block.attention.wq.weight.mul_(30)
            block.attention.wk.weight.mul_(30)
    folder = root / "tiny-model"
    save_model(model, folder, meta={"note": "serve tests"}, tokenizer_path=root / "tok" / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def reference(model_dir):
    """Greedy continuation by full recomputation (no cache, no batching), as text and ids."""
    from auroragpt.data.tokenizer import load_tokenizer
    from auroragpt.model.io import load_model

    model, _ = load_model(model_dir, dtype=torch.float64)
    model.reset_rotary()
    tok = load_tokenizer(model_dir / "tokenizer.json")

    @torch.no_grad()
    def greedy(prompt: str | list[int], max_tokens: int) -> tuple[str, list[int]]:
        ids = tok.encode(prompt) if isinstance(prompt, str) else list(prompt)
        out: list[int] = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: extra threads only contend with the servers
        try:
            for _ in range(max_tokens):
                nxt = int(model(torch.tensor([ids + out]))[0, -1].argmax())
                if nxt == tok.eod_id:
                    break
                out.append(nxt)
        finally:
            torch.set_num_threads(threads)
        return tok.decode(out), out

    greedy.tokenizer = tok
    return greedy


class Server:
    def __init__(self, model_dir: Path, tmp: Path, extra: list[str], env_keys: str, key: str) -> None:
        self.key = key  # the API key this server accepts
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"server-{self.port}.log", "w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "AURORAGPT_API_KEYS": env_keys, "AURORAGPT_LOG_LEVEL": "WARNING"}
        cmd = [sys.executable, "-m", "auroragpt.cli", "serve", str(model_dir), "--port", str(self.port),
               "--device", "cpu", "--dtype", "float64", "--model-name", "tiny-test", "--max-batch", "8",
               "--max-tokens-cap", "200", "--state-dir", str(tmp / f"state-{self.port}"), *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready in time")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.log.close()

    def client(self, key: str | None = None, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base + "/v1", api_key=key or self.key, timeout=60, **kwargs)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """A real `auroragpt serve` process with a keys file."""
    tmp = tmp_path_factory.mktemp("servers")
    keyfile = tmp / "keys.txt"
    from auroragpt.serve.auth import hash_key

    keyfile.write_text(f"# test keys\n{hash_key(KEY)}\n")
    main = Server(model_dir, tmp, ["--api-keys-file", str(keyfile), "--max-file-bytes", str(1 << 20)], env_keys="", key=KEY)
    try:
        main.wait_ready()
        yield main
    finally:
        main.close()


@pytest.fixture(scope="session")
def loaded(model_dir):
    """(model, tokenizer) of the test model, loaded once for in-process apps."""
    from auroragpt.serve.server import load_for_serving

    model, tok, _ = load_for_serving(str(model_dir), "cpu", "float64")
    return model, tok
