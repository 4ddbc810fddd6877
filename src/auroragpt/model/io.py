"""The consolidated "model folder": one safetensors file plus config.json, written atomically.

Training checkpoints are sharded (torch.distributed.checkpoint); evaluation, export and serving
want one self-describing folder that any single process can load. This module is that format.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from auroragpt.atomic import atomic_folder
from auroragpt.errors import DataError
from auroragpt.model.gpt import GPT
from auroragpt.model.presets import ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "auroragpt-model-folder/1"


def _weights_to_save(model: GPT) -> dict[str, torch.Tensor]:
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("output.weight", None)  # the same storage as tok_embeddings.weight
    return state


def save_model(model: GPT, path: str | os.PathLike, meta: dict | None = None, tokenizer_path: str | os.PathLike | None = None) -> Path:
    """Write a model folder at `path`; readers never see a half-written one."""
    from safetensors.torch import save_file

    final = Path(path)
    with atomic_folder(final, durable=True) as tmp:
        save_file(_weights_to_save(model), str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        config = {"format": FORMAT, "model": model.cfg.to_dict(), "meta": meta or {}}
        if tokenizer_path is not None:
            tok = Path(tokenizer_path)
            source = tok / TOKENIZER_FILE if tok.is_dir() else tok
            if not source.is_file():
                raise DataError(f"tokenizer {tokenizer_path} has no {TOKENIZER_FILE}", hint="pass a tokenizer.json file or a folder holding one")
            shutil.copyfile(source, tmp / TOKENIZER_FILE)
            config["tokenizer"] = TOKENIZER_FILE
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return final


def is_model_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return False
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_config(path: str | os.PathLike) -> dict:
    config_path = Path(path) / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is not a model folder: {CONFIG_FILE} is missing") from None
    except ValueError as err:
        raise DataError(f"{config_path}: not valid JSON ({err})") from None
    if config.get("format") != FORMAT or "model" not in config:
        raise DataError(f"{config_path}: not an auroragpt model folder (format {config.get('format')!r}, expected {FORMAT!r})")
    return config


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> tuple[GPT, dict]:
    """The model in eval mode and the folder's whole config.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    cfg = ModelConfig.from_dict(config["model"], source=str(path / CONFIG_FILE))
    try:
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path / WEIGHTS_FILE}: cannot read weights ({err})", hint="the file is truncated or not a safetensors file; export it again") from None
    with torch.device("meta"):
        model = GPT(cfg)
    if cfg.tie_embeddings:
        state.setdefault("output.weight", state.get("tok_embeddings.weight"))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise DataError(f"{path / WEIGHTS_FILE} does not match its config.json: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        want = model.state_dict()[name].shape
        if tensor.shape != want:
            raise DataError(f"{path / WEIGHTS_FILE}: tensor {name} has shape {tuple(tensor.shape)}, config.json implies {tuple(want)}")
    model.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.reset_rotary(device)
    if dtype is not None:
        model.to(dtype)
    return model.eval(), config
