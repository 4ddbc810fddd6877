"""An OpenAI-compatible inference endpoint with a KV cache and continuous batching."""
