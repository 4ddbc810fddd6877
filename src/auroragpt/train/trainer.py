"""The training loop. `train(cfg)` reads top to bottom; everything clever is a named function below.

The loop never knows which parallelism is on: `auroragpt.parallel.parallelize` turns the
single-device model into this rank's parts and gives back one `train_step` (plain, DDP, FSDP2,
TP or a pipeline schedule alike) and one global `clip_grad_norm_`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from auroragpt.config import Config, save_resolved, total_steps
from auroragpt.errors import ConfigError
from auroragpt.log import configure, get_logger
from auroragpt.train.checkpoint import (META, Checkpointer, checkpoints_root, list_checkpoints, remove_incomplete,
                                       resolve_checkpoint)
from auroragpt.model.checkpoint_integrity import newest_intact
from auroragpt.train.guard import SpikeGuard, TrainingDiverged
from auroragpt.train.run_lock import RunLock
from auroragpt.train.metrics import (MetricsWriter, device_peak_flops, memory_gib, strict_record, throughput,
                                    truncate_after)
from auroragpt.train.optim import build_optimizer, lr_at, set_lr

log = get_logger(__name__)


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    skipped_steps: int


def train(cfg: Config) -> TrainResult:
    """Run (or resume) the training job described by `cfg` on every rank of the launched job."""
    from auroragpt.runtime.env import read_rank_info
    from auroragpt.train.families import select_family

    run_dir = Path(cfg.run.dir)
    check_run_dir(run_dir)  # before any model is built: a bad path must cost seconds, not minutes
    family = select_family(cfg)
    model_cfg = family.resolve_model_config(cfg)
    steps = total_steps(cfg)
    ranks = read_rank_info()
    layout = check_layout(cfg, model_cfg, ranks.world_size)  # before any process-group work
    configure(ranks.rank)
    lock = RunLock(run_dir).acquire() if ranks.rank == 0 else None  # one job per run folder
    try:
        return _train(cfg, run_dir, family, model_cfg, steps, layout)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: Config, run_dir: Path, family, model_cfg, steps: int, layout) -> TrainResult:
    """The job itself, on every rank, once the config and layout are known to be sound."""
    from auroragpt.runtime.setup import seed_everything, setup, teardown
    from auroragpt.parallel.layout import build_mesh, data_parallel_coordinates, grad_accum_steps
    from auroragpt.parallel.parallelize import parallelize

    info = setup(seed=cfg.train.seed)
    configure(info.rank)
    mesh = build_mesh(layout, info.device.type)
    on_meta = use_meta_init(cfg.parallel.meta_init, model_cfg, layout) and not cfg.checkpoint.init_from
    if info.rank == 0:
        log_layout(info, layout, on_meta)
    model = family.build_model(model_cfg, info.device, cfg.train.seed, on_meta=on_meta)
    resume_path = find_resume_checkpoint(cfg, run_dir)
    if resume_path is None and cfg.checkpoint.init_from:
        load_initial_weights(model, cfg.checkpoint.init_from, model_cfg)
    runner = (family.parallelize or parallelize)(model, layout, mesh, mixed_precision=cfg.parallel.mixed_precision == "bf16",
                         activation_checkpoint=cfg.parallel.activation_checkpointing, compile=cfg.parallel.compile,
                         device=info.device)
    if on_meta:
        runner.init_weights(cfg.train.seed)
    optimizers = [build_optimizer(part, cfg.optim) for part in runner.model_parts]
    guard = SpikeGuard(cfg.train.spike_factor, cfg.train.spike_warmup_steps, cfg.train.max_skipped_in_a_row)
    checkpointer = Checkpointer(run_dir, cfg.checkpoint.keep_last, cfg.checkpoint.async_save)

    prepare_run_dir(cfg, run_dir, info.rank)
    seed_everything(cfg.train.seed, info.rank)
    step, tokens_seen = resume(cfg, run_dir, resume_path, checkpointer, runner, optimizers, guard, info, steps)

    dp_rank, dp_size = data_parallel_coordinates(layout, mesh)
    loader = family.build_data_loader(cfg, model_cfg, dp_rank, dp_size, start_sample=step * cfg.data.global_batch, steps=steps)
    job = _Job(cfg, model_cfg, info, runner, optimizers, guard, checkpointer,
               objective=family.build_objective(cfg, runner, model_cfg, info, loader), batches=iter(loader),
               metrics=MetricsWriter(run_dir, info.rank == 0, wandb=cfg.metrics.wandb, tensorboard=cfg.metrics.tensorboard,
                                     project=cfg.metrics.project, run_name=cfg.run.name, config=cfg.to_dict()),
               accum=grad_accum_steps(layout, cfg.data.global_batch, cfg.data.micro_batch),
               tokens_per_step=family.tokens_per_step(cfg, model_cfg), data_mix=read_data_mix(cfg),
               flops_per_token=model_cfg.flops_per_token(cfg.data.seq_len), peak=device_peak_flops(info.device))
    log.info("training %s (%.1fM parameters) for %d steps on %d ranks, %d micro batches per step",
             cfg.model.preset, model_cfg.num_params() / 1e6, steps, info.world_size, job.accum)
    first_step = step
    try:
        step, loss, finite_steps = _run_steps(job, step, tokens_seen, steps)
        checkpointer.wait()
        check_something_was_learnt(step - first_step, finite_steps, loss)
    finally:
        job.metrics.close()
        if info.rank == 0 and cfg.metrics.plots:  # a stopped or diverged run gets its plots too
            write_plots_safely(run_dir)
    teardown()
    return TrainResult(run_dir, step, loss, guard.skipped_total)


@dataclasses.dataclass
class _Job:
    """What the step loop works with, built once per run by `_train`."""

    cfg: Config
    model_cfg: Any
    info: Any
    runner: Any
    optimizers: list
    guard: SpikeGuard
    checkpointer: Checkpointer
    objective: Any
    batches: Iterator
    metrics: MetricsWriter
    accum: int
    tokens_per_step: int
    data_mix: Any
    flops_per_token: float
    peak: float | None


def _run_steps(job: _Job, step: int, tokens_seen: int, steps: int) -> tuple[int, float, int]:
    """Steps from `step` to `steps`: the step count reached, the last loss and how many were finite."""
    cfg, loss, finite_steps = job.cfg, float("nan"), 0
    while step < steps:
        lr = lr_at(step, cfg.optim, steps)
        for optimizer in job.optimizers:
            set_lr(optimizer, lr)
        started, cpu_started = time.perf_counter(), time.process_time()
        loss, grad_norm, applied = _optimizer_step(job, step, lr, tokens_seen)
        finite_steps += math.isfinite(loss)
        synchronize(job.info.device)
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        step += 1
        tokens_seen += job.tokens_per_step
        saving = should_checkpoint(cfg, step, steps)
        if step % cfg.metrics.log_every == 0 or step == steps or not applied or saving:
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_seen,
                      "step_time_s": elapsed, "cpu_time_s": cpu_elapsed, "skipped": not applied,
                      "skipped_steps": job.guard.skipped_total, "memory_gib": memory_gib(job.info.device),
                      **throughput(job.tokens_per_step, elapsed, job.flops_per_token, job.info.world_size, job.peak),
                      **job.objective.metrics()}
            if saving:  # the checkpoint keeps the record, in case a kill comes before it is written
                meta = checkpoint_meta(cfg, job.model_cfg, step, tokens_seen, job.guard, job.data_mix)
                job.checkpointer.save(step, job.runner.model_parts, job.optimizers,
                                      {**meta, "metrics_record": strict_record(record)})
                record["checkpoint_save_s"] = job.checkpointer.last_save_s
            job.metrics.write(record)
            log.info(format_record(record))
    return step, loss, finite_steps


def _optimizer_step(job: _Job, step: int, lr: float, tokens_seen: int) -> tuple[float, float, bool]:
    """One step's forward/backward, clipping and (unless the spike guard skips it) update."""
    tokens, targets, loss_fn = job.objective.batch(job.batches, job.accum)
    loss = float(job.runner.train_step(tokens, targets, loss_fn, grad_accum=job.accum))
    grad_norm = float(job.runner.clip_grad_norm_(job.cfg.train.grad_clip))
    try:
        applied = job.guard.check(step + 1, loss, grad_norm)
    except TrainingDiverged as err:  # the step that ends the run is in the metrics too
        job.metrics.write({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                           "tokens": tokens_seen, "skipped": True, "skipped_steps": job.guard.skipped_total,
                           "stopped": err.message})
        raise
    if applied:
        for optimizer in job.optimizers:
            optimizer.step()
    for optimizer in job.optimizers:
        optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, applied


# ----------------------------------------------------------------------------------------------
# The named pieces, in the order the loop uses them.


def log_layout(info, layout, on_meta: bool) -> None:
    window = (f" wp={layout.wp} ({layout.wp_lat}x{layout.wp // layout.wp_lat} tiles) sp={layout.sp}"
              if layout.window > 1 else "")
    log.info("%s; layout pp=%d dp_replicate=%d dp_shard=%d tp=%d (%s)%s%s", info.topology(), layout.pp,
             layout.dp_replicate, layout.dp_shard, layout.tp, layout.data_parallel_mode, window,
             ", weights initialised per shard from the meta device" if on_meta else "")


def resume(cfg: Config, run_dir: Path, resume_path: Path | None, checkpointer: Checkpointer, runner, optimizers: list,
           guard: SpikeGuard, info, steps: int) -> tuple[int, int]:
    """Step and tokens seen to start from: the checkpoint's, restored into the model parts, optimizers
    and guard, or (0, 0). The metrics log forgets steps a killed run logged after its last checkpoint."""
    from auroragpt.runtime.setup import seed_everything

    step, tokens_seen, meta = 0, 0, {}
    if resume_path is not None:
        meta = checkpointer.load(resume_path, runner.model_parts, optimizers)
        step, tokens_seen = meta["step"], meta["tokens_seen"]
        guard.load_state_dict(meta["guard"])
        if meta.get("world_size") != info.world_size:
            seed_everything(cfg.train.seed + step, info.rank)
        warn_if_data_order_changes(meta.get("config", {}), cfg, steps)
        log.info("resumed from %s at step %d (%d tokens seen)", resume_path, step, tokens_seen)
    if info.rank == 0:  # a checkpoint of this run keeps its own record; one from elsewhere does not
        own = resume_path is not None and resume_path.parent.resolve() == checkpoints_root(run_dir).resolve()
        truncate_after(run_dir / "metrics.jsonl", step, meta.get("metrics_record") if own else None)
    return step, tokens_seen


def check_something_was_learnt(steps_run: int, finite_steps: int, last_loss: float) -> None:
    """A run whose every step had a non-finite loss failed, even when it was too short for the
    guard's max_skipped_in_a_row to stop it: it must not exit 0."""
    if steps_run > 0 and finite_steps == 0:
        raise TrainingDiverged(f"every one of the {steps_run} steps of this run had a non-finite loss "
                               f"(last: {last_loss}); nothing was learnt",
                               hint="check the model and optimizer settings (model.rope_theta, model.norm_eps, "
                               "optim.lr); the metrics record each step's loss")


def write_plots_safely(run_dir: Path) -> None:
    """Plots and summary at the end of any run; a failure here never hides the run's own error."""
    from auroragpt.train.plots import write_plots

    try:
        write_plots(run_dir)
        log.info("plots and summary: %s/{loss.png,throughput.png,summary.txt}", run_dir)
    except Exception as err:  # noqa: BLE001 - the plots are a convenience, the run's outcome is not
        log.warning("could not write the plots of %s: %s", run_dir, err)


def resolve_model_config(cfg: Config):
    """The preset with the config's overrides; vocab_size from the tokenizer unless set."""
    from auroragpt.model.presets import get_preset

    overrides = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "preset" and v is not None}
    if "vocab_size" not in overrides and cfg.data.tokenizer and not cfg.data.synthetic:
        from auroragpt.data.tokenizer import load_tokenizer

        overrides["vocab_size"] = load_tokenizer(cfg.data.tokenizer).vocab_size
    overrides.setdefault("max_seq_len", cfg.data.seq_len)
    return get_preset(cfg.model.preset, **overrides)


def check_layout(cfg: Config, model_cfg, world_size: int):
    """The parallel layout validated against world, model and batch sizes (no process group needed)."""
    from auroragpt.parallel.layout import ParallelLayout, validate

    fields = {f.name for f in dataclasses.fields(ParallelLayout)}
    raw = {k: v for k, v in dataclasses.asdict(cfg.parallel).items() if k in fields}
    return validate(ParallelLayout.from_dict(raw), world_size, model_cfg, cfg.data.global_batch, cfg.data.micro_batch)


META_INIT_MIN_PARAMS = 1_000_000_000


def use_meta_init(choice: str, model_cfg, layout) -> bool:
    """Whether to build the model on the meta device and allocate only each rank's shard or stage.

    "auto" does so from 1B parameters when the layout splits the model (a 7B model is 28 GB in
    fp32 before FSDP shards it; 70B fits on no device). Smaller models keep the single-device init,
    whose values do not depend on the layout, so runs on different layouts start identically.
    """
    if choice == "always":
        return True
    if choice == "never":
        return False
    splits = layout.dp_shard > 1 or layout.tp > 1 or layout.pp > 1
    return splits and model_cfg.num_params() >= META_INIT_MIN_PARAMS


def build_model(model_cfg, device: torch.device, seed: int, on_meta: bool = False) -> torch.nn.Module:
    """The full single-device model, initialised identically on every rank from `seed`; or, with
    `on_meta`, its shapes only, to be allocated and initialised after parallelize()."""
    from auroragpt.model.gpt import GPT

    with torch.device("meta" if on_meta else device):
        model = GPT(model_cfg)
    if not on_meta:
        model.init_weights(torch.Generator(device=device).manual_seed(seed))
    return model


def check_run_dir(run_dir: Path) -> None:
    """run.dir must be a folder, or creatable: its nearest existing ancestor a writable folder."""
    from auroragpt.atomic import check_creatable

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir {run_dir} is a file, not a folder", hint="set --run.dir to a folder path")
    check_creatable(run_dir, "run.dir")


def prepare_run_dir(cfg: Config, run_dir: Path, rank: int) -> None:
    """Rank 0 creates the run dir, writes the resolved config and clears half-written checkpoints."""
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, run_dir)
        remove_incomplete(run_dir)
    if dist.is_initialized():
        dist.barrier()


def find_resume_checkpoint(cfg: Config, run_dir: Path) -> Path | None:
    """The run's own newest intact checkpoint (when checkpoint.resume), else checkpoint.load_from.

    A run started from load_from and restarted (by --retries or by hand) continues from its own
    progress rather than starting over from load_from. Damaged checkpoints are skipped with a
    warning naming them. With resume=false, a folder that already holds checkpoints is refused:
    they would be mixed with this run's and a later resume would continue the older run.
    Collective (every rank verifies a share of the files).
    """
    own = list_checkpoints(run_dir)
    if own and not cfg.checkpoint.resume:
        raise ConfigError(f"checkpoint.resume = false, but {run_dir} already holds checkpoints of an earlier run "
                          f"(up to {own[-1].name}); a fresh run there would mix its checkpoints with them",
                          hint="choose a new run.dir for a fresh run, delete the old checkpoints, or set "
                          "checkpoint.resume = true to continue that run")
    found = newest_intact(own, warn=log.warning) if own else None
    if found is not None:
        if cfg.checkpoint.load_from:
            log.info("continuing from this run's own %s (checkpoint.load_from applies only to a fresh run)", found.name)
        return found
    if cfg.checkpoint.load_from:
        source = Path(cfg.checkpoint.load_from)
        if (source / META).exists() or not checkpoints_root(source).is_dir():
            return resolve_checkpoint(source)
        found = newest_intact(list_checkpoints(source), warn=log.warning)
        if found is None:
            raise ConfigError(f"checkpoint.load_from = {source}: that run folder has no complete checkpoint yet")
        return found
    return None


def load_initial_weights(model: torch.nn.Module, source: str, model_cfg) -> None:
    """Copy the weights of a model folder or checkpoint into the freshly built `model` (fine-tuning)."""
    from auroragpt.model.io import is_model_folder, load_model
    from auroragpt.model.loading import load_inference_model

    donor, _ = load_model(source) if is_model_folder(source) else load_inference_model(source)
    theirs, ours = donor.cfg.to_dict(), model_cfg.to_dict()
    differ = {k: (theirs.get(k), ours.get(k)) for k in ours if theirs.get(k) != ours.get(k) and k != "max_seq_len"}
    if differ:
        raise ConfigError(
            f"checkpoint.init_from={source} holds a different model: "
            + ", ".join(f"{k} {a} there vs {b} here" for k, (a, b) in sorted(differ.items())),
            hint="set [model] to match it (its config.json or meta.json lists every field)",
        )
    with torch.no_grad():
        model.load_state_dict(donor.state_dict())
    log.info("initialised the weights from %s", source)


def warn_if_data_order_changes(saved: dict[str, Any], cfg: Config, steps: int) -> None:
    """The LR schedule spans the run's steps and the blend plan its steps x global_batch samples:
    resuming with other values continues on a new schedule and sample order (allowed, e.g. to
    extend a run, but said out loud)."""
    from auroragpt.config import config_from_dict

    try:
        before = config_from_dict(saved)
    except Exception:  # a checkpoint from an older config layout: nothing to compare
        return
    old = (total_steps(before), before.data.global_batch, before.data.seq_len, before.data.file_list, before.data.seed)
    new = (steps, cfg.data.global_batch, cfg.data.seq_len, cfg.data.file_list, cfg.data.seed)
    if old != new:
        log.warning("resuming with (steps, global_batch, seq_len, file_list, data seed) = %s instead of the checkpoint's %s: "
                    "the learning-rate schedule and the blend plan are rebuilt for the new values", new, old)


def build_data_loader(cfg: Config, model_cfg, dp_rank: int, dp_size: int, start_sample: int, steps: int):
    """The blend loader over the data-file-list, or synthetic tokens; resumes at `start_sample`."""
    d = cfg.data
    if d.synthetic:
        from auroragpt.train.synthetic import SyntheticLoader

        return SyntheticLoader(model_cfg.vocab_size, d.seq_len, dp_rank, dp_size, d.micro_batch, d.global_batch,
                               seed=d.seed, start_sample=start_sample)
    from auroragpt.data.blend import build_blend_plan
    from auroragpt.data.filelist import parse_file_list
    from auroragpt.data.loader import build_loader

    if cfg.train.objective in ("sft", "dpo"):
        from auroragpt.data.examples import build_example_plan

        plan = build_example_plan(cfg, steps)
        return build_loader(plan, dp_rank, dp_size, d.micro_batch, d.global_batch, start_sample=start_sample)

    if d.tokenizer:
        from auroragpt.data.tokenizer import load_tokenizer

        vocab = load_tokenizer(d.tokenizer).vocab_size
        if vocab > model_cfg.vocab_size:
            raise ConfigError(f"the tokenizer {d.tokenizer} has {vocab} tokens but model.vocab_size is {model_cfg.vocab_size}",
                              hint="leave model.vocab_size unset to take it from the tokenizer, or raise it")

    plan = build_blend_plan(parse_file_list(d.file_list), d.seq_len, steps * d.global_batch, d.seed,
                            split="train", valid_fraction=d.valid_fraction)
    return build_loader(plan, dp_rank, dp_size, d.micro_batch, d.global_batch, num_workers=d.num_workers,
                        start_sample=start_sample)


def next_batch(batches: Iterator[torch.Tensor], accum: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of one global batch: `accum` micro batches, as inputs and shifted targets."""
    rows = torch.cat([next(batches) for _ in range(accum)])
    return rows[:, :-1], rows[:, 1:]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss, computed in fp32 whatever the activations' dtype."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1))


def synchronize(device: torch.device) -> None:
    """Wait for the device so step times are real (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def should_checkpoint(cfg: Config, step: int, steps: int) -> bool:
    every = cfg.checkpoint.every
    return (step == steps and cfg.checkpoint.save_at_end) or (every > 0 and step % every == 0)


def checkpoint_meta(cfg: Config, model_cfg, step: int, tokens_seen: int, guard: SpikeGuard,
                    data_mix: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What a checkpoint records besides tensors: enough to resume, evaluate, export and serve."""
    return {
        "tokens_seen": tokens_seen,
        "samples_seen": step * cfg.data.global_batch,
        "guard": guard.state_dict(),
        "model_config": model_cfg.to_dict(),
        # a synthetic run never used its data.tokenizer: recording it would pair the model with a stranger
        "tokenizer": str(Path(cfg.data.tokenizer).resolve()) if cfg.data.tokenizer and not cfg.data.synthetic else None,
        "data": {"file_list": cfg.data.file_list, "seq_len": cfg.data.seq_len, "synthetic": cfg.data.synthetic,
                 "mix": data_mix},
        "config": cfg.to_dict(),
    }


def read_data_mix(cfg: Config) -> list[dict[str, Any]] | None:
    """The blend's (weight, prefix, corpus) entries, recorded so a checkpoint tells what it saw.

    Read once per run: synthetic runs have none, even when a (possibly absent) file list is set.
    """
    if cfg.data.synthetic or not cfg.data.file_list:
        return None
    from auroragpt.data.filelist import parse_file_list

    return [{"weight": e.weight, "prefix": str(e.prefix), "corpus": e.corpus}
            for e in parse_file_list(cfg.data.file_list).entries]


def format_record(r: dict[str, Any]) -> str:
    mfu = f" mfu {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
    return (f"step {r['step']:>6} loss {r['loss']:.4f} lr {r['lr']:.2e} grad {r['grad_norm']:.3f} "
            f"{r['tokens_per_s']:,.0f} tok/s {r['tflops_per_device']:.2f} TFLOP/s/dev{mfu} mem {r['memory_gib']:.2f} GiB")
