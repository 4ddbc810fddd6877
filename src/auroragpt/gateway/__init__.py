"""An OpenAI-compatible gateway that starts model servers as scheduler jobs on demand.

`config` reads gateway.toml; `jobs` submits, polls and cancels backend jobs (local processes,
Slurm, PBS); `registry` keeps the jobs the gateway owns in an atomically written state file so a
restarted gateway reattaches; `pool` decides when to start, register, route to and retire
replicas; `app` is the HTTP front, reusing serve's auth, rate limits and error shape; `batches`
keeps files and batches (serve's Files/Batch APIs) on disk and runs each batch as a job of
`batchmain`, which drives serve's batch code in-process on the compute node.
"""
