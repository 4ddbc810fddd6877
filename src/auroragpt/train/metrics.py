"""Per-step training metrics: throughput, TFLOP/s and MFU from ONE peak-FLOPS table, memory,
JSON lines per run, and optional wandb / TensorBoard mirrors.

MFU = achieved model FLOP/s per device / the device's dense bf16 peak. A device missing from the
table gets MFU None (reported as absent), never a guess.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from auroragpt.atomic import write_atomically
from auroragpt.log import get_logger

log = get_logger(__name__)

@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """One accelerator as the dry run and MFU see it. Bandwidths are per device and per direction:
    `link_bw` to the other devices of its node, `network_bw` its share of the node's NICs."""

    peak_bf16: float          # dense (no sparsity) bf16 FLOP/s
    hbm_bytes: float = 0.0
    hbm_bw: float = 0.0       # bytes/s
    link_bw: float = 0.0      # bytes/s inside a node (NVLink, Xe Link, Infinity Fabric)
    network_bw: float = 0.0   # bytes/s across nodes
    per_node: int = 0         # devices per node on the usual system


# The one device table, matched by substring of the torch device name, first match wins (so the
# more specific names come first). Sources: vendor data sheets; network shares from the systems'
# NICs (Aurora: 8 x 200 Gb/s Slingshot per 12 tiles, Frontier: 4 x 200 Gb/s per 8 GCDs).
DEVICES: tuple[tuple[str, DeviceSpec], ...] = (
    ("H100 PCIe", DeviceSpec(756e12, 80e9, 2.0e12, 64e9, 50e9, 8)),
    ("H100 NVL", DeviceSpec(835e12, 94e9, 3.9e12, 300e9, 50e9, 8)),
    ("H100", DeviceSpec(989e12, 80e9, 3.35e12, 450e9, 50e9, 8)),            # SXM, NDR 400 per GPU
    ("H200", DeviceSpec(989e12, 141e9, 4.8e12, 450e9, 50e9, 8)),
    ("B200", DeviceSpec(2250e12, 192e9, 8.0e12, 900e9, 50e9, 8)),
    ("A100", DeviceSpec(312e12, 80e9, 2.04e12, 300e9, 25e9, 4)),            # SXM 80 GB; Polaris: 4 per node
    ("MI250X", DeviceSpec(191.5e12, 64e9, 1.6e12, 50e9, 12.5e9, 8)),        # one GCD (torch sees each)
    ("MI300X", DeviceSpec(1307.4e12, 192e9, 5.3e12, 64e9, 50e9, 8)),
    ("Max 1550", DeviceSpec(419.4e12, 64e9, 1.6e12, 100e9, 16.7e9, 12)),   # one tile (Aurora)
)
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = tuple((key, spec.peak_bf16) for key, spec in DEVICES)


def device_spec(device_name: str | None) -> DeviceSpec | None:
    """The table row of a device by (part of) its name, or None when it is not in the table."""
    if not device_name:
        return None
    for key, spec in DEVICES:
        if key.lower() in device_name.lower():
            return spec
    return None


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of one device, or None when the device is not in the table."""
    spec = device_spec(device_name)
    return spec.peak_bf16 if spec else None


def device_peak_flops(device: torch.device) -> float | None:
    """Peak of an accelerator by its name; None on CPU and MPS, whose names must never match a GPU row."""
    if device.type not in ("cuda", "xpu"):
        return None
    from auroragpt.runtime.device import device_name

    return peak_flops(device_name(device))


def memory_gib(device: torch.device) -> float:
    """Peak memory of this process: device allocator peak on accelerators, max RSS on CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.xpu.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def throughput(tokens: int, seconds: float, flops_per_token: float, world_size: int, peak: float | None) -> dict[str, float | None]:
    """tokens/s (whole job), TFLOP/s per device and MFU for one step of `tokens` global tokens."""
    seconds = max(seconds, 1e-9)
    tokens_per_s = tokens / seconds
    flops_per_device = tokens_per_s * flops_per_token / world_size
    return {
        "tokens_per_s": tokens_per_s,
        "tflops_per_device": flops_per_device / 1e12,
        "mfu": (flops_per_device / peak) if peak else None,
    }


class MetricsWriter:
    """Appends one JSON object per logged step to RUN_DIR/metrics.jsonl (rank 0 only writes)."""

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool, *, wandb: bool = False, tensorboard: bool = False,
                 project: str = "auroragpt", run_name: str = "", config: dict | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._file = None
        self._wandb = None
        self._tb = None
        if not enabled:
            return
        self._file = open(self.path, "a", buffering=1)
        if wandb:
            self._wandb = _start_wandb(project, run_name, config, run_dir)
        if tensorboard:
            self._tb = _start_tensorboard(Path(run_dir) / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled or self._file is None:
            return
        self._file.write(json.dumps(strict_record(record), allow_nan=False) + "\n")
        step = int(record.get("step", 0))
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def strict_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as strict JSON allows it: a NaN or infinite value becomes null, and the names of
    those fields are listed under "non_finite" (so a NaN loss is still told from a missing one)."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return record
    return {**{k: (None if k in bad else v) for k, v in record.items()}, "non_finite": bad}


def truncate_after(path: str | os.PathLike[str], step: int, last: dict[str, Any] | None = None) -> None:
    """Drop records of steps > `step` (written by a run killed after its last checkpoint), atomically.

    `last`, the record of step `step` kept in its checkpoint, is put back when a kill between the
    save and the metrics line lost it."""
    path = Path(path)
    if not path.exists() and last is None:
        return
    kept = [line for line in read_lines(path) if line.get("step", 0) <= step] if path.exists() else []
    if last is not None and last.get("step") == step and not any(r.get("step") == step for r in kept):
        kept.append(last)
    write_atomically(path, "".join(json.dumps(strict_record(r), allow_nan=False) + "\n" for r in kept))


def read_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _start_wandb(project: str, run_name: str, config: dict | None, run_dir: str | os.PathLike[str]):
    try:
        import wandb
    except ImportError:
        log.warning("metrics.wandb is on but wandb is not installed; pip install wandb (continuing without it)")
        return None
    return wandb.init(project=project, name=run_name or None, config=config, dir=str(run_dir))


def _start_tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("metrics.tensorboard is on but tensorboard is not installed; pip install tensorboard (continuing without it)")
        return None
    return SummaryWriter(str(log_dir))
