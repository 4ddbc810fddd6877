#!/usr/bin/env bash
# make demo-weather: simulate -> train weather-tiny -> 8-member ensemble forecast -> scores and plots.
# Everything lands in demo_weather/; nothing is downloaded.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-demo_weather}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
cd "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

echo "== 1. simulate 200 days of barotropic weather on a 32x64 grid (sim.zarr)"
[ -d sim.zarr ] || auroragpt weather simulate --out sim.zarr --grid 32x64 --days 200

echo "== 2. train weather-tiny for $STEPS steps (runs/weather-demo: metrics, checkpoints, loss.png)"
auroragpt train --config "$REPO/configs/weather-demo.toml" --train.steps="$STEPS"

echo "== 3. 8-member ensemble from 3 initial times of the test period, 6 steps (36 h) ahead"
INITS=$(python -c "
import xarray as xr, numpy as np
ds = xr.open_zarr('sim.zarr'); t = ds.time.values; n = len(t)
print(','.join(str(x)[:19] for x in t[int(0.87 * n):n - 10:max(1, (n // 10) // 3)][:3]))")
auroragpt weather forecast runs/weather-demo --init "$INITS" --lead-steps 6 --members 8 --out fc.zarr --force

echo "== 4. scores against the truth, persistence and climatology (score.json, score_*.png)"
auroragpt weather score fc.zarr --truth sim.zarr --output score.json
