"""`auroragpt eval` never touches the network unless told to: every run here happens in a process
whose audit hook records (and refuses) any DNS lookup or socket connection to a non-local address."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from evalexport_models import make_model

from auroragpt.data.tokenizer import load_tokenizer
from auroragpt.model.io import save_model

pytest.importorskip("lm_eval")

GUARD = r"""
import os, sys
LOG = os.environ["NETWORK_LOG"]
LOCAL = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "", None)

def _record(what):
    with open(LOG, "a") as f:
        f.write(what + "\n")
    raise ConnectionRefusedError(f"network access during eval: {what}")

def _hook(event, args):
    if event == "socket.getaddrinfo" and args[0] not in LOCAL and not str(args[0]).startswith("127."):
        _record(f"getaddrinfo {args[0]}")
    elif event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address[0] not in LOCAL and not str(address[0]).startswith("127."):
            _record(f"connect {address}")

sys.addaudithook(_hook)
from auroragpt.cli import main
sys.exit(main(sys.argv[1:]))
"""

TASK = """task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture
def model_folder(tmp_path, tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    return save_model(make_model(vocab_size=tok.vocab_size), tmp_path / "model", tokenizer_path=tokenizer_path)


def _guarded_eval(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(NETWORK_LOG=str(log), HF_HOME=str(tmp_path / "hf_home"))  # an empty cache: nothing to find
    proc = subprocess.run([sys.executable, "-c", GUARD, "eval", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    return proc, (log.read_text().splitlines() if log.exists() else [])


def test_builtin_task_without_a_task_source_is_refused_offline(tmp_path, model_folder):
    proc, attempts = _guarded_eval(tmp_path, str(model_folder), "--tasks", "lambada_openai")
    assert attempts == [] and proc.returncode == 2, proc.stderr
    assert "no task source" in proc.stderr and "--include-path" in proc.stderr and "Traceback" not in proc.stderr


def test_builtin_task_from_an_empty_cache_fails_without_a_download(tmp_path, model_folder):
    proc, attempts = _guarded_eval(tmp_path, str(model_folder), "--tasks", "lambada_openai", "--include-default-tasks",
                                   "--limit", "2")
    assert attempts == [], attempts
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "lambada_openai" in proc.stderr and "Traceback" not in proc.stderr


def test_local_task_runs_with_no_network_access(tmp_path, model_folder):
    docs = [{"question": q, "choices": ["yes", "no"], "answer": i % 2} for i, q in enumerate(["A b", "C d", "E f"])]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_mc.yaml").write_text(TASK.format(data=data))
    out = tmp_path / "out.json"
    proc, attempts = _guarded_eval(tmp_path, str(model_folder), "--tasks", "local_mc", "--include-path",
                                   str(tmp_path / "tasks"), "--output", str(out))
    assert attempts == [], attempts
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "local_mc" in json.loads(out.read_text())["harness"]["results"]
