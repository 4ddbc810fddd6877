"""An OpenAI-compatible inference endpoint with a KV cache and continuous batching.

    auroragpt serve --hash-key "$KEY" >> keys.txt        # one SHA-256 hex digest per line
    auroragpt serve RUN_DIR_OR_MODEL_OR_HF_DIR --api-keys-file keys.txt --port 8000
    curl -H "Authorization: Bearer $KEY" localhost:8000/v1/completions \
         -d '{"prompt": "Hello", "max_tokens": 16, "temperature": 0}'

Modules: `engine` (continuous batching over `model.kvcache` and `model.sampling`), `protocol`
(OpenAI request/response shapes), `app` (assembles the app), `routes/` (one router per endpoint
family), `deps` (keys, rate limits and bodies as FastAPI dependencies), `streaming` (engine events
to responses), `metrics`, `state`, `batches` (Files + Batch APIs), `auth` (keys), `ratelimit`
(per-key buckets), `server` (loading and starting), `vllm_engine` (hand-off to vLLM on GPUs).
"""
