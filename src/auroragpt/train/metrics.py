"""Per-step training metrics: throughput, TFLOP/s and MFU from ONE peak-FLOPS table, memory,
JSON lines per run, and optional wandb / TensorBoard mirrors.

MFU = achieved model FLOP/s per device / the device's dense bf16 peak. A device missing from the
table gets MFU None (reported as absent), never a guess.
"""

from __future__ import annotations

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

# Dense (no sparsity) bf16 peak FLOP/s per torch device, matched by substring of the device name,
# first match wins (so the more specific names come first). Sources: vendor data sheets.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),            # SXM
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("MI250X", 191.5e12),        # one GCD (torch sees each of the two GCDs as a device)
    ("MI300X", 1307.4e12),
    ("Max 1550", 419.4e12),      # one tile of an Intel Data Center GPU Max 1550 (Aurora)
)


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of one device, or None when the device is not in the table."""
    if not device_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


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
