"""Data: Megatron-compatible indexed datasets, tokenization, blending and loading."""
