"""Reading Hugging Face Llama folders into our `GPT`: the tensor-name map, the config
translation and the weights. It lives in model/ because every consumer of a model (eval, serve,
training's `init_from`) loads HF folders; export/ adds the writing side on top of it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from auroragpt.errors import ConfigError
from auroragpt.jsonio import read_json

# (our name, HF name) for the tensors outside the layers, and per layer with "{i}" for the index.
GLOBAL_NAMES = (
    ("tok_embeddings.weight", "model.embed_tokens.weight"),
    ("norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
)
LAYER_NAMES = (
    ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attention.wk.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight"),
    ("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight"),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def name_map(n_layers: int, tie_embeddings: bool) -> dict[str, str]:
    """Our state-dict name -> HF name, for every tensor a checkpoint holds."""
    mapping = {ours: theirs for ours, theirs in GLOBAL_NAMES}
    if tie_embeddings:
        del mapping["output.weight"]
    for i in range(n_layers):
        for ours, theirs in LAYER_NAMES:
            mapping[ours.format(i=i)] = theirs.format(i=i)
    return mapping


def _read_json(path: Path) -> dict:
    return read_json(path, ConfigError, hint="point at a Hugging Face model folder", want=dict)


def config_from_hf(hf: dict, source: str):
    """Our ModelConfig from a HF Llama config.json; anything our model cannot represent is an error."""
    from auroragpt.model.presets import ModelConfig

    if hf.get("model_type") not in ("llama", "mistral"):
        raise ConfigError(f"{source}: model_type {hf.get('model_type')!r} is not a Llama model",
                          hint="only LlamaForCausalLM-style checkpoints can be imported")
    checks = {
        "hidden_act": (hf.get("hidden_act", "silu"), "silu"),
        "attention_bias": (bool(hf.get("attention_bias", False)), False),
        "mlp_bias": (bool(hf.get("mlp_bias", False)), False),
    }
    for field, (value, wanted) in checks.items():
        if value != wanted:
            raise ConfigError(f"{source}: {field}={value!r} is not supported (our model uses {wanted!r})")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ConfigError(f"{source}: rope scaling {rope_type!r} is not supported", hint="only plain rotary embeddings import")
    if hf.get("sliding_window"):
        raise ConfigError(f"{source}: sliding-window attention is not supported")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    missing = [key for key in required if key not in hf]
    if missing:
        raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}",
                          hint=f"a Llama config.json needs {', '.join(required)}; re-save it with save_pretrained")
    for key in (*required, "num_key_value_heads", "head_dim", "max_position_embeddings"):
        value = hf.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{source}: {key} must be a positive integer, got {value!r}")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise ConfigError(f"{source}: head_dim {head_dim} x {heads} heads != hidden_size {hf['hidden_size']}")
    try:
        return ModelConfig(
            dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads, ffn_dim=hf["intermediate_size"],
            vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            norm_eps=float(hf.get("rms_norm_eps", 1e-5)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as err:
        raise ConfigError(f"{source}: missing field {err.args[0]!r}") from None


def _load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index)["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ConfigError(f"{folder} has no model.safetensors or model.safetensors.index.json",
                          hint="re-save the model with save_pretrained(..., safe_serialization=True)")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(str(folder / name)))
    return tensors


def is_hf_folder(path: str | os.PathLike) -> bool:
    """A Hugging Face model folder (config.json with model_type/architectures), not one of ours."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data) and "format" not in data



def load_hf(hf_dir: str | os.PathLike, dtype: str | None = "float32"):
    """A `GPT` (eval mode) with the weights of a HF Llama folder, and our ModelConfig."""
    from auroragpt.model.gpt import GPT

    folder = Path(hf_dir)
    cfg = config_from_hf(_read_json(folder / "config.json"), str(folder / "config.json"))
    weights = _load_hf_weights(folder)
    mapping = name_map(cfg.n_layers, cfg.tie_embeddings)
    if not cfg.tie_embeddings and "lm_head.weight" not in weights:
        raise ConfigError(f"{folder}: tie_word_embeddings is false but lm_head.weight is missing")
    ignored = re.compile(r"rotary_emb\.inv_freq$")
    unexpected = sorted(set(weights) - set(mapping.values()) - {"lm_head.weight"} - {k for k in weights if ignored.search(k)})
    if unexpected:
        raise ConfigError(f"{folder}: tensors our model has no place for: {unexpected[:5]}")
    target = DTYPES[dtype] if dtype else weights["model.embed_tokens.weight"].dtype
    state = {}
    for ours, theirs in mapping.items():
        if theirs not in weights:
            raise ConfigError(f"{folder}: tensor {theirs} is missing")
        state[ours] = weights[theirs].to(target)
    if cfg.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    with torch.device("meta"):  # no random init of weights about to be replaced
        model = GPT(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.reset_rotary("cpu")
    return model.eval(), cfg
