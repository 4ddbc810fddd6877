"""Single-device model code. Knows nothing about parallelism or torch.distributed."""
