"""Which accelerator this process drives and which collective backend goes with it.

One table (`DEVICE_BACKENDS`) says which backends each device type can use, in order of
preference; `AURORAGPT_DEVICE` / `AURORAGPT_BACKEND` override the choice and are validated
against what this machine actually has, so a typo fails at start-up, not in the first all-reduce.
"""

from __future__ import annotations

import importlib.util

from auroragpt import envvars
from auroragpt.errors import DistError

# device type -> backends it can use, preferred first. "ccl" is only offered when the oneCCL
# bindings are importable (see `_backend_available`).
DEVICE_BACKENDS: dict[str, tuple[str, ...]] = {
    "cuda": ("nccl", "gloo"),
    "xpu": ("xccl", "ccl", "gloo"),
    "mps": ("gloo",),
    "cpu": ("gloo",),
}
DEVICE_PREFERENCE = ("cuda", "xpu", "mps", "cpu")
ALL_BACKENDS = ("nccl", "xccl", "ccl", "gloo")


def device_available(device_type: str) -> bool:
    """True when torch can use `device_type` on this machine."""
    import torch

    if device_type == "cpu":
        return True
    if device_type == "cuda":
        return torch.cuda.is_available()
    if device_type == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    if device_type == "mps":
        return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    return False


def _backend_available(backend: str) -> bool:
    import torch.distributed as dist

    if backend in BACKEND_PLUGINS:
        return importlib.util.find_spec(BACKEND_PLUGINS[backend]) is not None
    if backend == "nccl":
        return dist.is_nccl_available()
    if backend == "gloo":
        return dist.is_gloo_available()
    if backend == "xccl":
        is_xccl = getattr(dist, "is_xccl_available", None)
        return bool(is_xccl and is_xccl())
    return False


# Backends that exist in torch.distributed only once a plug-in module has been imported.
BACKEND_PLUGINS = {"ccl": "oneccl_bindings_for_pytorch"}


def register_backend(backend: str) -> None:
    """Import the plug-in that registers `backend` with torch.distributed (ccl: Intel oneCCL)."""
    plugin = BACKEND_PLUGINS.get(backend)
    if plugin is None:
        return
    try:
        importlib.import_module(plugin)
    except ImportError as err:
        raise DistError(f"the {backend} backend needs {plugin}, which could not be imported: {err}",
                        hint=f"install the {plugin} build that matches your torch, or set AURORAGPT_BACKEND "
                        "to another backend (see `auroragpt doctor`)") from None


def detect_device() -> str:
    """The device type to use: AURORAGPT_DEVICE if set (validated), else the best one present."""
    forced = envvars.read("AURORAGPT_DEVICE")
    if forced is not None:
        name = forced.strip().lower()
        if name not in DEVICE_BACKENDS:
            raise DistError(
                f"AURORAGPT_DEVICE={forced!r} is not a device this toolbox knows "
                f"(known: {', '.join(DEVICE_PREFERENCE)}).",
                hint="set AURORAGPT_DEVICE to one of those, or unset it to detect the device automatically",
            )
        if not device_available(name):
            raise DistError(
                f"AURORAGPT_DEVICE={name} but torch cannot use a {name} device on this machine.",
                hint=f"unset AURORAGPT_DEVICE, or install a torch build with {name} support "
                "(check with `auroragpt doctor`)",
            )
        return name
    for name in DEVICE_PREFERENCE:
        if device_available(name):
            return name
    return "cpu"


def detect_backend(device: str) -> str:
    """The collective backend for `device` (a type such as "cuda" or a torch.device string)."""
    device_type = str(device).split(":")[0]
    if device_type not in DEVICE_BACKENDS:
        raise DistError(f"unknown device {device!r}", hint=f"use one of {', '.join(DEVICE_PREFERENCE)}")
    usable = DEVICE_BACKENDS[device_type]
    forced = envvars.read("AURORAGPT_BACKEND")
    if forced is not None:
        name = forced.strip().lower()
        if name not in ALL_BACKENDS:
            raise DistError(
                f"AURORAGPT_BACKEND={forced!r} is not a collective backend this toolbox knows "
                f"(known: {', '.join(ALL_BACKENDS)}).",
                hint="set AURORAGPT_BACKEND to one of those, or unset it to pick the backend automatically",
            )
        if name not in usable:
            raise DistError(
                f"AURORAGPT_BACKEND={name} cannot drive a {device_type} device "
                f"(a {device_type} device works with: {', '.join(usable)}).",
                hint=f"unset AURORAGPT_BACKEND, or pick a device that {name} supports "
                f"(nccl needs CUDA GPUs; xccl/ccl need Intel GPUs)",
            )
        if not _backend_available(name):
            raise DistError(
                f"AURORAGPT_BACKEND={name} but this torch build does not provide it.",
                hint="unset AURORAGPT_BACKEND, or install the build that ships it "
                "(ccl needs `oneccl_bindings_for_pytorch`)",
            )
        return name
    for name in usable:
        if _backend_available(name):
            return name
    raise DistError(f"no collective backend for {device_type} is available in this torch build",
                    hint="install a torch build with distributed support (gloo)")


def local_device(device_type: str, local_rank: int):
    """The torch.device this rank drives: accelerator index local_rank modulo the visible count."""
    import torch

    if device_type in ("cuda", "xpu"):
        count = getattr(torch, device_type).device_count()
        return torch.device(device_type, local_rank % max(count, 1))
    return torch.device(device_type)


def set_current_device(device) -> None:
    """Make `device` the current one, so collectives and allocations land on this rank's GPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "xpu":
        torch.xpu.set_device(device)


def device_name(device) -> str:
    """Human-readable accelerator name (e.g. "NVIDIA H100 80GB HBM3"); the CPU model for cpu."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_name()


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_count(device_type: str) -> int:
    """Number of accelerators of this type visible to the process (1 for cpu and mps)."""
    import torch

    if device_type in ("cuda", "xpu") and device_available(device_type):
        return getattr(torch, device_type).device_count()
    return 1
