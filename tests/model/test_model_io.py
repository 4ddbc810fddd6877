import json

import pytest
import torch

from auroragpt.errors import DataError
from auroragpt.model.gpt import GPT
from auroragpt.model.io import is_model_folder, load_model, save_model
from auroragpt.model.presets import ModelConfig


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip(tmp_path, tied):
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=48, vocab_size=61, max_seq_len=32, tie_embeddings=tied)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(3))
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    save_model(model, tmp_path / "m", meta={"step": 7}, tokenizer_path=tok)
    assert is_model_folder(tmp_path / "m")
    loaded, config = load_model(tmp_path / "m")
    assert config["meta"] == {"step": 7} and (tmp_path / "m" / "tokenizer.json").exists()
    tokens = torch.randint(0, 61, (2, 9))
    torch.testing.assert_close(loaded(tokens), model.eval()(tokens))
    if tied:
        assert loaded.output.weight is loaded.tok_embeddings.weight
    # Saving again replaces the folder whole, leaving no temporary folders behind.
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "tokenizer.json"]


def test_corrupt_folders_are_reported(tmp_path):
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=48, vocab_size=20, max_seq_len=8)
    save_model(GPT(cfg), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read weights"):
        load_model(tmp_path / "m")
    save_model(GPT(cfg), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["dim"] = 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="shape"):
        load_model(tmp_path / "m")
    with pytest.raises(DataError, match="config.json is missing"):
        load_model(tmp_path)
