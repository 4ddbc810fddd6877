"""How a single-device model is spread over devices: DDP, FSDP2, tensor, sequence, pipeline."""
