"""AuroraGPT: train, evaluate and serve foundation models from a laptop to ten thousand GPU nodes.

Importing the package does no work: no environment reads, no torch or MPI initialisation. The
runtime API for one's own script is loaded on first use:

    import auroragpt as ag
    info = ag.setup(seed=0)            # rank, local rank, world, nodes, device, backend
    model = ag.wrap(model, "fsdp")     # or "ddp", "hsdp"; mixed precision, activation checkpointing
    ag.all_reduce_mean(x); ag.barrier(); ag.print0(...); ag.device()
    history = ag.History("out"); history.update(step=1, loss=...); history.finalize()
    with ag.timers("step"): ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "setup": "auroragpt.runtime.api",
    "teardown": "auroragpt.runtime.api",
    "wrap": "auroragpt.runtime.api",
    "device": "auroragpt.runtime.api",
    "rank": "auroragpt.runtime.api",
    "barrier": "auroragpt.runtime.api",
    "all_reduce_mean": "auroragpt.runtime.api",
    "print0": "auroragpt.runtime.api",
    "History": "auroragpt.runtime.history",
    "timers": "auroragpt.runtime.timers",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'auroragpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
