"""AERIS-style weather models: a pixel-level Swin diffusion transformer, an embedded simulator,
gridded datasets, ensemble forecasts and WeatherBench2-style scores.

The model (`model.py`, `windows.py`) is single-device code; parallelism is applied from outside.
"""
