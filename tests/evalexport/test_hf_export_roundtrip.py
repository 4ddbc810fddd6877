"""Export to a HF Llama folder that transformers loads and agrees with, and import back."""

from __future__ import annotations

import json

import pytest
import torch
from evalexport_models import make_model

from auroragpt.cli import main
from auroragpt.errors import ConfigError
from auroragpt.model.generate import generate
from auroragpt.model.io import load_model, save_model

transformers = pytest.importorskip("transformers")

META = {"tokens_seen": 123456, "step": 42,
        "data": {"mix": [{"weight": 0.7, "prefix": "/d/prose_text_document", "corpus": "prose"},
                         {"weight": 0.3, "prefix": "/d/code_text_document", "corpus": "code"}]}}


def _export_via_cli(tmp_path, model, tokenizer_path, *extra):
    folder = save_model(model, tmp_path / "ours", meta=META, tokenizer_path=tokenizer_path)
    out = tmp_path / "hf"
    assert main(["export", "hf", str(folder), str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_transformers_loads_export_and_matches_logits_and_greedy_generation(tmp_path, tokenizer_path, tie):
    torch.manual_seed(0)
    model = make_model(tie=tie)
    # The tied model is also split into shards, to test the index json.
    out = _export_via_cli(tmp_path, model, tokenizer_path, *(["--max-shard-size", "60KB"] if tie else []))
    if tie:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    else:
        assert (out / "model.safetensors").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 40))
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, model(tokens), atol=1e-4, rtol=0)
        prompt = tokens[:1, :6]
        theirs = hf.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0, eos_token_id=None)
    ours = generate(model, [prompt[0].tolist()], 24)[0]
    assert theirs[0, 6:].tolist() == ours
    assert len(set(ours)) > 3  # a real continuation, not one token repeated


def test_exported_tokenizer_and_model_card(tmp_path, tokenizer_path):
    from auroragpt.data.tokenizer import load_tokenizer

    out = _export_via_cli(tmp_path, make_model(), tokenizer_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_tokenizer(tokenizer_path)
    text = "The lazy dog returns a + b."
    assert hf_tok(text).input_ids == ours.encode(text)
    assert hf_tok.eos_token_id == ours.eod_id
    card = (out / "README.md").read_text()
    assert "123,456" in card and "| prose | 0.7 | 70.0% |" in card and "| code | 0.3 | 30.0% |" in card
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == ours.eod_id
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_import_round_trip_gives_the_same_model(tmp_path, tokenizer_path, tie):
    model = make_model(tie=tie, seed=3)
    out = _export_via_cli(tmp_path, model, tokenizer_path, "--max-shard-size", "100KB")
    back = tmp_path / "imported"
    assert main(["import", "hf", str(out), str(back)]) == 0
    loaded, config = load_model(back)
    assert loaded.cfg == model.cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tie
    assert (back / "tokenizer.json").is_file()
    assert config["meta"]["original_meta"]["tokens_seen"] == 123456


def test_import_rejects_what_our_model_cannot_represent(tmp_path, tokenizer_path):
    out = _export_via_cli(tmp_path, make_model(), tokenizer_path)
    config = json.loads((out / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0}
    (out / "config.json").write_text(json.dumps(config))
    from auroragpt.export.hf import import_hf

    with pytest.raises(ConfigError, match="rope scaling 'llama3'"):
        import_hf(out, tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_export_refuses_to_clobber_an_existing_folder(tmp_path, tokenizer_path, capsys):
    out = _export_via_cli(tmp_path, make_model(), tokenizer_path)
    assert main(["export", "hf", str(tmp_path / "ours"), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_import_a_model_built_by_transformers(tmp_path):
    config = transformers.LlamaConfig(vocab_size=200, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                                      rope_theta=20000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "elsewhere")
    assert main(["import", "hf", str(tmp_path / "elsewhere"), str(tmp_path / "ours")]) == 0
    ours, _ = load_model(tmp_path / "ours")
    assert (ours.cfg.n_heads, ours.cfg.n_kv_heads, ours.cfg.rope_theta, ours.cfg.norm_eps) == (6, 2, 20000.0, 1e-6)
    tokens = torch.randint(0, 200, (2, 30))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), hf(tokens).logits, atol=1e-4, rtol=0)


def test_provenance_reads_both_checkpoint_kinds(tmp_path, tokenizer_path):
    from auroragpt.export.provenance import provenance

    dcp_meta = {"step": 7, "tokens_seen": 900, "tokenizer": str(tokenizer_path), "model_config": {},
                "data": {"mix": META["data"]["mix"]}}
    origin = provenance(dcp_meta, tmp_path)
    assert (origin.step, origin.tokens_seen, origin.tokenizer_path) == (7, 900, tokenizer_path)
    assert origin.data_mix[0]["corpus"] == "prose"
    folder = save_model(make_model(), tmp_path / "m", meta=META, tokenizer_path=tokenizer_path)
    _, config = load_model(folder)
    origin = provenance(config, folder)
    assert (origin.step, origin.tokens_seen, origin.tokenizer_path) == (42, 123456, folder / "tokenizer.json")


def test_export_from_a_training_run_directory(tmp_path, tokenizer_path):
    """A DCP checkpoint written by the trainer's Checkpointer exports with its recorded provenance."""
    from auroragpt.train.checkpoint import Checkpointer

    model = make_model(seed=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    meta = {"model_config": model.cfg.to_dict(), "tokens_seen": 98765, "tokenizer": str(tokenizer_path),
            "data": {"mix": META["data"]["mix"]}}
    Checkpointer(tmp_path / "run", keep_last=1).save(3, [model], [optimizer], meta)
    out = tmp_path / "hf"
    assert main(["export", "hf", str(tmp_path / "run"), str(out), "--dtype", "float32"]) == 0
    card = (out / "README.md").read_text()
    assert "98,765" in card and "| optimizer steps | 3 |" in card and "| prose |" in card
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, model(tokens), atol=1e-4, rtol=0)


def test_export_refuses_a_tokenizer_bigger_than_the_model(tmp_path):
    import torch

    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.errors import ConfigError
    from auroragpt.export.hf import export_hf
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    tok = train_bpe([f"word{i} " * 20 for i in range(200)], 400, tmp_path / "tok.json")
    model = GPT(get_preset("tiny", n_layers=1, vocab_size=64, max_seq_len=16))
    model.init_weights(torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=f"has {tok.vocab_size} tokens but the model only 64 embeddings"):
        export_hf(model, tmp_path / "out", tokenizer_path=tok.path)
    assert not (tmp_path / "out").exists()


def test_every_command_reads_a_hugging_face_folder_too(tmp_path):
    """eval, export and serve share one loader: a HF Llama folder is as good as a checkpoint."""
    import torch

    from auroragpt.export.hf import export_hf
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset
    from auroragpt.model.loading import load_inference_model

    model = GPT(get_preset("tiny", n_layers=1, vocab_size=64, max_seq_len=16))
    model.init_weights(torch.Generator().manual_seed(0))
    export_hf(model.eval(), tmp_path / "hf")
    loaded, meta = load_inference_model(tmp_path / "hf")
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(tokens), model(tokens), atol=1e-5)
    assert meta["hf_folder"] == str(tmp_path / "hf")
