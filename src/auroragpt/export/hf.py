"""Hugging Face Llama folders: export our models to `LlamaForCausalLM`, and import them back.

Our parameter names map one to one onto HF Llama's and the rotary layout is the same (rotate
half), so both directions copy tensors without permuting them. The name table below is the one
place that mapping lives. Output folders are written under a temporary name and renamed at the end,
so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from auroragpt.atomic import atomic_folder
from auroragpt.errors import ConfigError
from auroragpt.log import get_logger
from auroragpt.model.hf_format import DTYPES, _read_json, config_from_hf, is_hf_folder, load_hf, name_map  # noqa: F401

log = get_logger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3

def hf_config(cfg, dtype: torch.dtype, bos_id: int | None, eos_id: int | None) -> dict:
    """config.json for LlamaForCausalLM; rope given both ways so transformers 4.x and 5.x read it."""
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise ConfigError(f"output folder {out} already exists and is not empty",
                          hint="choose a new path or pass --overwrite")


def _save_weights(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> list[str]:
    """model.safetensors, or model-0000i-of-0000n.safetensors shards plus the index json."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file_name, shard in zip(names, shards):
        save_file(shard, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update({name: file_name for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


def _tokenizer_files(tokenizer_path: Path, folder: Path, max_seq_len: int, vocab_size: int) -> tuple[int | None, int]:
    """tokenizer.json plus the config files PreTrainedTokenizerFast reads; returns (bos, eos) ids."""
    from auroragpt.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"the tokenizer {tokenizer_path} has {tok.vocab_size} tokens but the model only "
                          f"{vocab_size} embeddings: they were not trained together",
                          hint="pass the tokenizer the model was trained with (--tokenizer)")
    tok.backend.save(str(folder / "tokenizer.json"))
    special = {"eos_token": tok.backend.id_to_token(tok.eod_id)}
    if tok.bos_id is not None:
        special["bos_token"] = tok.backend.id_to_token(tok.bos_id)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_seq_len,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return tok.bos_id, tok.eod_id


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _data_mix_lines(mix) -> str:
    """The blend as a table: list of {corpus, weight, prefix} (training meta) or {corpus: weight}."""
    if not mix:
        return "Not recorded in the checkpoint."
    if isinstance(mix, dict):
        mix = [{"corpus": k, "weight": v} for k, v in mix.items()]
    if not (isinstance(mix, list) and all(isinstance(x, dict) for x in mix)):
        return f"```\n{json.dumps(mix, indent=2, default=str)}\n```"
    total = sum(float(x.get("weight", 0) or 0) for x in mix) or 1.0
    lines = ["| corpus | weight | share | data |", "|---|---:|---:|---|"]
    for x in mix:
        weight = float(x.get("weight", 0) or 0)
        lines.append(f"| {x.get('corpus', '')} | {weight:g} | {weight / total:.1%} | {Path(str(x.get('prefix', ''))).name} |")
    return "\n".join(lines)


def model_card(cfg, meta: dict, name: str) -> str:
    """README.md: what the model is, how big, and what it was trained on (data mix, tokens seen)."""
    tokens = meta.get("tokens_seen")
    shape = [
        ("parameters", f"{cfg.num_params():,}"),
        ("layers", str(cfg.n_layers)),
        ("hidden size", str(cfg.dim)),
        ("attention heads (key/value)", f"{cfg.n_heads} ({cfg.n_kv_heads})"),
        ("MLP size", str(cfg.ffn_dim)),
        ("vocabulary", str(cfg.vocab_size)),
        ("context length", str(cfg.max_seq_len)),
        ("rotary theta", str(cfg.rope_theta)),
        ("tied embeddings", str(cfg.tie_embeddings)),
    ]
    training = [
        ("tokens seen", f"{tokens:,}" if isinstance(tokens, int) else str(tokens or "not recorded")),
        ("optimizer steps", str(meta.get("step", "not recorded"))),
    ]
    return "\n".join([
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [auroragpt, llama]",
        "---",
        f"# {name}",
        "",
        "A Llama-architecture causal language model trained with the auroragpt toolbox and exported "
        "to the Hugging Face `LlamaForCausalLM` format.",
        "",
        "## Architecture",
        "",
        _table(shape),
        "",
        "## Training",
        "",
        _table(training),
        "",
        "### Data mix",
        "",
        _data_mix_lines(meta.get("data_mix")),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
        "",
    ])


def export_hf(model: torch.nn.Module, out_dir: str | os.PathLike, meta: dict | None = None,
              tokenizer_path: str | os.PathLike | None = None, dtype: str | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> Path:
    """Write a `LlamaForCausalLM` folder for `model` (a `GPT`) at `out_dir`, atomically."""
    out = Path(out_dir)
    _check_output(out, overwrite)
    cfg = model.cfg
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
    state = model.state_dict()
    target = DTYPES[dtype] if dtype else state["tok_embeddings.weight"].dtype
    tensors = {}
    for ours, theirs in name_map(cfg.n_layers, cfg.tie_embeddings).items():
        if ours not in state:
            raise ConfigError(f"model has no tensor {ours!r}; only a whole (unsharded, all-stage) model can be exported")
        tensors[theirs] = state[ours].detach().to("cpu", target).contiguous()
    with atomic_folder(out, durable=True) as tmp:
        _save_weights(tensors, tmp, max_shard_bytes)
        bos_id = eos_id = None
        if tokenizer_path is not None:
            bos_id, eos_id = _tokenizer_files(Path(tokenizer_path), tmp, cfg.max_seq_len, cfg.vocab_size)
        config = hf_config(cfg, target, bos_id, eos_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": bos_id, "eos_token_id": eos_id}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(cfg, meta or {}, out.name))
        if meta:
            (tmp / "auroragpt_meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("exported %s parameters to %s", f"{cfg.num_params():,}", out)
    return out


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str | None = "float32",
              overwrite: bool = False) -> Path:
    """Convert a HF Llama folder into our model folder (auroragpt.model.io format) for fine-tuning."""
    from auroragpt.model.io import save_model

    folder, out = Path(hf_dir), Path(out_dir)
    _check_output(out, overwrite)
    model, cfg = load_hf(folder, dtype)
    tokenizer = folder / "tokenizer.json"
    meta = {"imported_from": str(folder.resolve()), "format": "huggingface-llama"}
    card = folder / "auroragpt_meta.json"
    if card.is_file():
        meta["original_meta"] = _read_json(card)
    save_model(model, out, meta=meta, tokenizer_path=tokenizer if tokenizer.is_file() else None)
    log.info("imported %s parameters from %s to %s", f"{cfg.num_params():,}", folder, out)
    return out
