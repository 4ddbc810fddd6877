import torch

from auroragpt.model.gpt import GPT
from auroragpt.model.presets import ModelConfig

CFG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=97, max_seq_len=64)


def make_model(cfg=CFG):
    torch.manual_seed(0)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(1))
    return model.eval()


class AppendCache:
    """The simplest cache: keep every key/value, plain causal attention."""

    def __init__(self):
        self.k, self.v = {}, {}

    def update(self, layer_id, k, v):
        if layer_id in self.k:
            k = torch.cat([self.k[layer_id], k], dim=2)
            v = torch.cat([self.v[layer_id], v], dim=2)
        self.k[layer_id], self.v[layer_id] = k, v
        return k, v, None


def test_forward_is_causal_and_shaped():
    model = make_model()
    tokens = torch.randint(0, CFG.vocab_size, (2, 16))
    logits = model(tokens)
    assert logits.shape == (2, 16, CFG.vocab_size)
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % CFG.vocab_size
    torch.testing.assert_close(model(changed)[:, :10], logits[:, :10])


def test_init_is_reproducible_from_a_generator():
    a, b = make_model(), make_model()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_incremental_decoding_with_a_cache_matches_full_forward():
    model = make_model()
    tokens = torch.randint(0, CFG.vocab_size, (2, 12))
    full = model(tokens)
    cache = AppendCache()
    out = [model(tokens[:, :5], cache=cache)]
    for t in range(5, 12):
        out.append(model(tokens[:, t : t + 1], positions=torch.full((2, 1), t), cache=cache))
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-5, rtol=1e-4)


def test_tied_embeddings_share_storage():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=48, vocab_size=50, max_seq_len=16, tie_embeddings=True)
    model = make_model(cfg)
    assert model.output.weight is model.tok_embeddings.weight


def test_pipeline_style_stages_compose():
    model = make_model()
    tokens = torch.randint(0, CFG.vocab_size, (1, 8))
    expected = model(tokens)
    first, second = make_model(), make_model()
    del first.layers["1"]
    first.norm, first.output = None, None
    del second.layers["0"]
    second.tok_embeddings = None
    torch.testing.assert_close(second(first(tokens)), expected)
