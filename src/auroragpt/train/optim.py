"""AdamW with weight-decay groups and a warmup + cosine/linear decay learning-rate schedule.

The schedule is a pure function of the step, so resuming needs no scheduler state: the step
number alone gives the learning rate back exactly.
"""

from __future__ import annotations

import math

import torch

from auroragpt.config import OptimSection


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); leave norm gains and biases alone."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW over the model's (possibly sharded) parameters; fused kernels on CUDA."""
    params = list(model.parameters())
    fused = bool(params) and params[0].device.type == "cuda"
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused or None,
    )


def lr_at(step: int, cfg: OptimSection, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine or linear decay to
    `min_lr` over `decay_steps` (0 = until the end of the run), then flat at min_lr.
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    decay_steps = cfg.decay_steps or max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / decay_steps, 1.0)
    if cfg.decay == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0 - progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
