"""`data tokenize --format chat|completion|preference`: Megatron-readable tokens, a loss-mask sidecar
made from template spans, pairs kept together, and the template lint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from post_fixtures import chat_records, preference_records, run_cli, write_jsonl


def _mcore():
    return pytest.importorskip("megatron.core.datasets.indexed_dataset").IndexedDataset


def test_chat_tokens_read_by_megatron_and_mask_is_assistant_tokens_with_end_of_turn(tmp_path, tokenizer_path):
    from auroragpt.data.tokenizer import load_tokenizer

    records = chat_records(30)
    write_jsonl(tmp_path / "chat.jsonl", records)
    result = run_cli("data", "tokenize", tmp_path / "chat.jsonl", "--output-prefix", tmp_path / "sft",
                     "--tokenizer", tokenizer_path, "--format", "chat", "--workers", "2")
    assert result.returncode == 0, result.stderr
    tok = load_tokenizer(tokenizer_path)
    tokens, masks = _mcore()(str(tmp_path / "sft")), _mcore()(str(tmp_path / "sft.lossmask"))
    assert len(tokens) == len(masks) == 30
    for k, record in enumerate(records):
        ids, mask = tokens[k], masks[k]
        assert ids.size == mask.size
        assistant = record["messages"][1]["content"]
        expected = tok.encode(assistant) + [tok.eod_id]  # the content and the end-of-turn token, nothing else
        assert ids[mask == 1].tolist() == expected
        assert int(mask.sum()) == len(expected)
        assert tok.decode(ids[mask == 0].tolist()).startswith("<|user|>\nrepeat")


def test_preference_pairs_stay_together_through_a_shuffled_merge(tmp_path, tokenizer_path):
    from auroragpt.data.tokenize import tokenize_corpora
    from auroragpt.data.tokenizer import load_tokenizer

    records = preference_records(20)
    write_jsonl(tmp_path / "a.jsonl", records[:10])
    write_jsonl(tmp_path / "b.jsonl", records[10:])
    tokenize_corpora([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "pref", tokenizer_path,
                     fmt="preference", shuffle_seed=7, workers=1)
    tok = load_tokenizer(tokenizer_path)
    tokens, masks = _mcore()(str(tmp_path / "pref")), _mcore()(str(tmp_path / "pref.lossmask"))
    assert len(tokens) == 40 and list(tokens.document_indices) == list(range(0, 41, 2))
    seen = set()
    for d in range(20):
        chosen, rejected = tokens[2 * d], tokens[2 * d + 1]
        c_text = tok.decode(chosen[masks[2 * d] == 1].tolist())
        r_text = tok.decode(rejected[masks[2 * d + 1] == 1].tolist())
        prompt = tok.decode(chosen[masks[2 * d] == 0].tolist())
        assert prompt == tok.decode(rejected[masks[2 * d + 1] == 0].tolist())
        seen.add((prompt, c_text, r_text))
    assert seen == {(r["prompt"], r["chosen"] + "<|endoftext|>", r["rejected"] + "<|endoftext|>") for r in records}


def test_example_without_assistant_tokens_is_refused_with_file_and_line(tmp_path, tokenizer_path):
    records = chat_records(3)
    records[1] = {"messages": [{"role": "user", "content": "hello"}]}
    write_jsonl(tmp_path / "bad.jsonl", records)
    result = run_cli("data", "tokenize", tmp_path / "bad.jsonl", "--output-prefix", tmp_path / "out",
                     "--tokenizer", tokenizer_path, "--format", "chat", "--workers", "1")
    assert result.returncode == 2
    assert f"{tmp_path / 'bad.jsonl'}:2: example has no assistant tokens" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.bin").exists()


def test_template_whose_end_of_turn_is_outside_the_mask_is_refused(tmp_path, tokenizer_path):
    never_stops = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    (tmp_path / "bad.jinja").write_text(never_stops)
    write_jsonl(tmp_path / "chat.jsonl", chat_records(3))
    result = run_cli("data", "tokenize", tmp_path / "chat.jsonl", "--output-prefix", tmp_path / "out",
                     "--tokenizer", tokenizer_path, "--format", "chat", "--chat-template", tmp_path / "bad.jinja")
    assert result.returncode == 2
    assert "end-of-turn token falls outside the loss mask" in result.stderr and "Traceback" not in result.stderr
    fixed = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    (tmp_path / "good.jinja").write_text(fixed)
    result = run_cli("data", "tokenize", tmp_path / "chat.jsonl", "--output-prefix", tmp_path / "out",
                     "--tokenizer", tokenizer_path, "--format", "chat", "--chat-template", tmp_path / "good.jinja")
    assert result.returncode == 0, result.stderr


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_hugging_face_chat_template_matches_transformers_and_masks_assistant_turns(tmp_path):
    """The Jinja template of an imported HF tokenizer renders the ids transformers' apply_chat_template
    gives, and the mask covers each assistant turn through <|im_end|>."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import AddedToken

    from auroragpt.data.chat_template import load_chat_template
    from auroragpt.data.tokenizer import load_tokenizer, train_bpe

    folder = tmp_path / "hf"
    tok = train_bpe([" ".join(["alpha beta gamma user assistant system"] * 20)] * 50, 300, folder / "tokenizer.json")
    backend = tok.backend
    backend.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)])
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>"}))
    ours = load_tokenizer(folder)
    template = load_chat_template("hf", ours)
    messages = [{"role": "system", "content": "alpha"}, {"role": "user", "content": "beta gamma"},
                {"role": "assistant", "content": "gamma alpha"}, {"role": "user", "content": "beta"},
                {"role": "assistant", "content": "alpha alpha"}]
    ids, mask = template.render(messages, ours)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), chat_template=CHATML)
    expected = theirs.apply_chat_template(messages, tokenize=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert ids == list(expected)
    trained = ours.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "gamma alpha<|im_end|>\nalpha alpha<|im_end|>\n"


def test_completion_strings_mask_only_the_completion(tmp_path, tokenizer_path):
    from auroragpt.data.indexed import IndexedDataset
    from auroragpt.data.tokenize import tokenize_corpora
    from auroragpt.data.tokenizer import load_tokenizer

    write_jsonl(tmp_path / "c.jsonl", [{"prompt": "say alpha", "completion": " alpha beta"}])
    tokenize_corpora([tmp_path / "c.jsonl"], tmp_path / "c", tokenizer_path, fmt="completion", workers=1)
    tok = load_tokenizer(tokenizer_path)
    ids, mask = IndexedDataset(tmp_path / "c")[0], IndexedDataset(tmp_path / "c.lossmask")[0]
    assert ids[mask == 1].tolist() == tok.encode(" alpha beta") + [tok.eod_id]
    assert np.array_equal(ids[mask == 0], tok.encode("say alpha"))
