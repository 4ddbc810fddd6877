"""A local lm-eval task (YAML over a JSON file) run through the real harness via `auroragpt eval`.

The task data is made from the model's own predictions, so the harness's metrics have exact
expected values: accuracy 0.5, exact match 0.5, and a word perplexity computed directly.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from evalexport_models import make_model

from auroragpt.cli import main
from auroragpt.data.tokenizer import load_tokenizer
from auroragpt.model.generate import generate
from auroragpt.model.io import save_model

pytest.importorskip("lm_eval")

QUESTIONS = ["The quick brown fox", "A model card records", "Perplexity is the", "def add(a, b):"]
CHOICES = ["jumps over", "the data mix", "lazy dog", "return a"]

TASKS = {
    "tiny_mc": """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
""",
    "tiny_gen": """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{completion}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
""",
    "tiny_roll": """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{question}}"
metric_list:
  - metric: word_perplexity
""",
}


def _logprob(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, computed directly."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0].float()
    logprobs = F.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids)))


def _write_task(folder, data_file):
    folder.mkdir()
    for name, body in TASKS.items():
        header = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\n"
                  "test_split: test\n")
        (folder / f"{name}.yaml").write_text(header + body)


def test_local_tasks_through_lm_eval_match_direct_computation(tmp_path, tokenizer_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = load_tokenizer(tokenizer_path)
    model = make_model(vocab_size=tok.vocab_size, seed=5)
    docs, words, total_ll = [], 0, 0.0
    for i, question in enumerate(QUESTIONS):
        ctx = tok.encode(question)
        scores = [_logprob(model, tok.encode(f"{question} {c}"), len(ctx)) for c in CHOICES]
        best = max(range(len(CHOICES)), key=scores.__getitem__)
        # Half of the answers agree with the model's choice, half do not.
        answer = best if i % 2 == 0 else (best + 1) % len(CHOICES)
        greedy = tok.decode(generate(model, [ctx], 6, stop_ids=[tok.eod_id])[0])
        for stop in ("\n", "."):
            greedy = greedy.split(stop)[0]
        completion = greedy if i < 2 else greedy + "#"
        docs.append({"question": question, "choices": CHOICES, "answer": answer, "completion": completion})
        total_ll += _logprob(model, [tok.eod_id, *tok.encode(question)], 1)
        words += len(question.split())
    data_file = tmp_path / "docs.jsonl"
    data_file.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    _write_task(tmp_path / "tasks", data_file)
    folder = save_model(model, tmp_path / "model", tokenizer_path=tokenizer_path)

    out = tmp_path / "results.json"
    code = main(["eval", str(folder), "--tasks", "tiny_mc,tiny_gen,tiny_roll", "--include-path",
                 str(tmp_path / "tasks"), "--output", str(out)])
    assert code == 0
    results = json.loads(out.read_text())["harness"]["results"]
    assert results["tiny_mc"]["acc,none"] == pytest.approx(0.5)
    assert results["tiny_gen"]["exact_match,none"] == pytest.approx(0.5)
    assert results["tiny_roll"]["word_perplexity,none"] == pytest.approx(math.exp(-total_ll / words), rel=1e-4)


def test_unknown_task_is_a_clear_error(tmp_path, tokenizer_path, capsys):
    folder = save_model(make_model(), tmp_path / "model", tokenizer_path=tokenizer_path)
    (tmp_path / "tasks").mkdir()
    code = main(["eval", str(folder), "--tasks", "nope", "--include-path", str(tmp_path / "tasks")])
    assert code == 2
    assert "unknown lm-eval task" in capsys.readouterr().err


def test_adapter_handles_inputs_longer_than_the_context(tokenizer_path):
    from lm_eval.api.instance import Instance

    from auroragpt.eval.harness import AuroraLM

    tok = load_tokenizer(tokenizer_path)
    model = make_model(vocab_size=tok.vocab_size, max_seq_len=32)
    lm = AuroraLM(model, tok, batch_size=2)
    long_text = " ".join(QUESTIONS * 6)
    assert len(tok.encode(long_text)) > 3 * 32

    def request(kind, args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    (score, _), = lm.loglikelihood([request("loglikelihood", (long_text, " lazy dog"))])
    ids = tok.encode(long_text + " lazy dog")
    n_cont = len(ids) - len(tok.encode(long_text))
    assert score == pytest.approx(_logprob(model, ids[-33:], 33 - n_cont), abs=1e-4)
    (total,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", (long_text,))])
    assert math.isfinite(total) and total < 0
    (text,) = lm.generate_until([request("generate_until", (long_text, {"until": ["."], "max_gen_toks": 5}))])
    assert "." not in text


def test_broken_task_yaml_and_missing_task_data_are_named(tmp_path, tokenizer_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_model(make_model(), tmp_path / "model", tokenizer_path=tokenizer_path)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "broken.yaml").write_text("task: broken\noutput_type: [multiple_choice\n")
    assert main(["eval", str(folder), "--tasks", "broken", "--include-path", str(tasks)]) == 2
    err = capsys.readouterr().err
    assert "unknown lm-eval task(s) ['broken']" in err and "broken.yaml:" in err and "Traceback" not in err
    (tasks / "broken.yaml").unlink()
    (tasks / "nodata.yaml").write_text(
        f"task: nodata\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'absent.jsonl'}\n"
        "test_split: test\n" + TASKS["tiny_mc"])
    assert main(["eval", str(folder), "--tasks", "nodata", "--include-path", str(tasks)]) == 2
    err = capsys.readouterr().err
    assert "could not load the data of task(s) ['nodata']" in err and "Traceback" not in err
