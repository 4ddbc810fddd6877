"""A Hugging Face Llama folder (our export) served in-process, with its tokenizer's chat template."""

from __future__ import annotations

import json

import torch
from fastapi.testclient import TestClient

from auroragpt.serve.app import ServerSettings, create_app
from auroragpt.serve.engine import Engine
from auroragpt.export.hf import is_hf_folder
from auroragpt.serve.server import load_for_serving

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"


def test_hf_folder_with_a_chat_template(model_dir, reference, tmp_path):
    from auroragpt.export.hf import export_hf
    from auroragpt.model.io import load_model

    model, _ = load_model(model_dir)
    hf = export_hf(model, tmp_path / "hf", tokenizer_path=model_dir / "tokenizer.json")
    config = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    assert is_hf_folder(hf) and not is_hf_folder(model_dir)

    served, tokenizer, template = load_for_serving(str(hf), "cpu", "float64")
    assert template == TEMPLATE
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = Engine(served, tokenizer, max_batch=2)
        app = create_app(engine, tokenizer, ServerSettings(model_name="hf", state_dir=str(tmp_path / "state")),
                         chat_template=template)
        with TestClient(app) as client:
            body = {"messages": [{"role": "user", "content": "the lazy dog"}], "max_tokens": 12, "temperature": 0}
            answer = client.post("/v1/chat/completions", json=body).json()
    finally:
        torch.set_num_threads(threads)
    expected, _ = reference("[user] the lazy dog\n[assistant]", 12)
    assert answer["choices"][0]["message"]["content"] == expected
