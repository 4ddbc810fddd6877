#!/usr/bin/env bash
# The demo on this machine: a real 2-rank job through `auroragpt launch` that prints the topology
# it found, checks an all-reduce and runs a few DDP steps on gloo. (The Makefile puts .venv/bin on PATH.)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
auroragpt launch -n 2 -- python -m auroragpt.dist.selfcheck
