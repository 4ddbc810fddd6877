"""Which submodules of a model are its "blocks": the units FSDP shards and checkpointing recomputes.

The trainer's GPT keeps its transformer blocks in `model.layers`; a user's own module names its
blocks (modules, dotted names, or classes) or has a `layers` container, or has none, in which
case only the top module is sharded. One function answers for FSDP and activation checkpointing
alike, so both always agree on what a block is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from torch import nn

from auroragpt.errors import ConfigError

BlockSpec = Union[None, type, tuple, str, nn.Module, Iterable]


def find_blocks(model: nn.Module, blocks: BlockSpec = None) -> list[nn.Module]:
    """The blocks of `model` in forward order.

    blocks = None: the entries of `model.layers` (ModuleDict, ModuleList or Sequential), else none;
    a class or tuple of classes: every submodule of that type (outermost matches only);
    a dotted name, a submodule, or a list of either: exactly those.
    """
    if blocks is None:
        return _layers(model)
    if isinstance(blocks, type) or (isinstance(blocks, tuple) and blocks and all(isinstance(b, type) for b in blocks)):
        return _by_type(model, blocks)
    items = [blocks] if isinstance(blocks, (str, nn.Module)) else list(blocks)
    owned = {id(m) for m in model.modules()}
    found: list[nn.Module] = []
    for item in items:
        module = _by_name(model, item) if isinstance(item, str) else item
        if not isinstance(module, nn.Module) or id(module) not in owned or module is model:
            raise ConfigError(
                f"block {item!r} is not a submodule of the {type(model).__name__} being wrapped",
                hint="name blocks by dotted name (e.g. 'layers.0'), by class (e.g. nn.TransformerEncoderLayer), "
                "or pass the submodules themselves",
            )
        found.append(module)
    return found


def _layers(model: nn.Module) -> list[nn.Module]:
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleDict):
        return list(layers.values())
    if isinstance(layers, (nn.ModuleList, nn.Sequential)):
        return list(layers)
    return []


def _by_type(model: nn.Module, kinds: type | tuple) -> list[nn.Module]:
    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if module is model or id(module) in inside:
            continue
        if isinstance(module, kinds):
            found.append(module)
            inside.update(id(m) for m in module.modules())  # a block inside a block is not sharded twice
    if not found:
        names = kinds.__name__ if isinstance(kinds, type) else ", ".join(k.__name__ for k in kinds)
        raise ConfigError(f"no submodule of the {type(model).__name__} being wrapped is a {names}",
                          hint="pass the class of the model's repeated blocks, or blocks=None to wrap the top module only")
    return found


def _by_name(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children()) or "none"
        raise ConfigError(f"the {type(model).__name__} being wrapped has no submodule {name!r}",
                          hint=f"use a dotted name of a submodule; its children are: {children}") from None
