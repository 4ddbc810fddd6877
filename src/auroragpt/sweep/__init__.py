"""Hyperparameter sweeps: specs, trials, job arrays, Optuna studies on a journal file, results."""
