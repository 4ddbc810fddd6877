"""The training loop, optimizer and schedules, checkpoints and metrics."""
