"""Throughput, TFLOP/s and MFU from the one peak table; metrics files and plots."""

from __future__ import annotations

import json

import pytest
import torch

from auroragpt.train.metrics import MetricsWriter, device_peak_flops, peak_flops, read_lines, throughput, truncate_after
from auroragpt.train.plots import write_plots


def test_peak_table_and_unknown_devices():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("Intel(R) Data Center GPU Max 1550") == pytest.approx(419.4e12)
    assert peak_flops("AMD Instinct MI250X") == pytest.approx(191.5e12)
    assert peak_flops("NVIDIA GeForce RTX 4090") is None
    assert peak_flops(None) is None
    assert device_peak_flops(torch.device("cpu")) is None


def test_throughput_math_and_no_mfu_without_peak():
    r = throughput(tokens=1000, seconds=2.0, flops_per_token=6e9, world_size=4, peak=None)
    assert r["tokens_per_s"] == 500 and r["tflops_per_device"] == pytest.approx(0.75) and r["mfu"] is None
    r = throughput(tokens=1000, seconds=2.0, flops_per_token=6e9, world_size=4, peak=1.5e12)
    assert r["mfu"] == pytest.approx(0.5)


def test_jsonl_truncate_and_plots(tmp_path):
    writer = MetricsWriter(tmp_path, enabled=True)
    for step in range(1, 11):
        writer.write({"step": step, "loss": 5.0 / step, "lr": 1e-3, "grad_norm": 1.0, "tokens": 64 * step,
                      "tokens_per_s": 100.0, "tflops_per_device": 0.01, "mfu": None, "memory_gib": 0.1})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')  # torn line of a killed run
    assert len(read_lines(tmp_path / "metrics.jsonl")) == 10
    truncate_after(tmp_path / "metrics.jsonl", 6)
    assert [r["step"] for r in read_lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    summary = write_plots(tmp_path)
    assert "last 0.8333" in summary and "MFU: not reported" in summary
    for name in ("loss.png", "throughput.png", "summary.txt"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricsWriter(tmp_path, enabled=False)
    writer.write({"step": 1})
    writer.close()
    assert not (tmp_path / "metrics.jsonl").exists()
