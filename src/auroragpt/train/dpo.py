"""Direct preference optimisation (Rafailov et al. 2023) and its variants on the parallel runner.

Chosen and rejected go through one forward: a micro-batch holds pairs as rows 2k (chosen) and
2k+1 (rejected), so a pair never straddles micro-batches or pipeline micro-batches. The
reference log-probs travel with the targets, as one extra int64 column holding the float64 bits
(`pack_targets`), so every chunking the runner or a pipeline schedule makes keeps them aligned.

Losses, with h = (pi_c - pi_r) - (ref_c - ref_r) and label smoothing e:
  sigmoid  -(1-e) log s(beta h) - e log s(-beta h)
  robust   (-(1-e) log s(beta h) + e log s(-beta h)) / (1 - 2e)
  hinge    relu(1 - beta h)
  ipo      (h - 1/(2 beta))^2 with length-normalised log-probs
plus, with rpo_alpha > 0, rpo_alpha x the NLL of the chosen tokens (RPO).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from auroragpt.data.examples import IGNORE, decode_rows
from auroragpt.train.objectives import LossFn, global_sum, split_pieces

STATS = ("rewards_chosen", "rewards_rejected", "reward_accuracy", "reward_margin", "logps_chosen", "logps_rejected")


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(target) over loss positions, number of loss positions) per row, fp32."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1), ignore_index=IGNORE, reduction="none")
    if hasattr(nll, "full_tensor"):  # loss_parallel: per-token values of vocabulary-sharded logits come as a DTensor
        nll = nll.full_tensor()
    return -nll.view(targets.shape).sum(-1), (targets != IGNORE).sum(-1)


def dpo_losses(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, beta: float, loss: str = "sigmoid",
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the (detached) chosen and rejected rewards beta x (pi - ref)."""
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    e = label_smoothing
    if loss == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - e) - F.logsigmoid(-beta * h) * e
    elif loss == "robust":
        losses = (-F.logsigmoid(beta * h) * (1 - e) + F.logsigmoid(-beta * h) * e) / (1 - 2 * e)
    elif loss == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def pack_targets(targets: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """targets [B, T] plus the reference log-probs [B] as one more int64 column (float64 bits)."""
    bits = ref_logps.to(torch.float64).contiguous().view(torch.int64)
    return torch.cat([targets, bits.to(targets.device)[:, None]], dim=1)


def unpack_targets(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return packed[:, :-1], packed[:, -1].contiguous().view(torch.float64)


class DPOObjective:
    name = "dpo"

    def __init__(self, layout, reference, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0,
                 rpo_alpha: float = 0.0) -> None:
        self.layout, self.reference = layout, reference
        self.beta, self.loss, self.label_smoothing, self.rpo_alpha = beta, loss, label_smoothing, rpo_alpha
        # per micro-batch, keyed by its targets' storage: a pipeline schedule calls the loss once
        # more on its first step, on a stand-in output of the first micro-batch, to infer the
        # backward's shapes; the real call for that micro-batch then replaces the stand-in's numbers
        self._stats: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def batch(self, batches: Iterator[torch.Tensor], accum: int) -> tuple[torch.Tensor, torch.Tensor, LossFn]:
        rows = torch.cat([next(batches) for _ in range(accum)])
        examples, rows = rows[0::2, -1], rows[:, :-1]
        tokens, targets = decode_rows(rows)
        ref = self.reference.logps(examples, tokens, targets, accum)
        pairs = global_sum(torch.tensor(float(rows.shape[0] // 2), dtype=torch.float64), self.layout)
        chosen_tokens = global_sum((targets[0::2] != IGNORE).sum().double(), self.layout)
        pieces = split_pieces(self.layout, accum)
        self._stats.clear()
        return tokens, pack_targets(targets, ref), self.loss_fn(pieces / float(pairs), pieces / max(float(chosen_tokens), 1.0))

    def loss_fn(self, pair_scale: float, token_scale: float) -> LossFn:
        """The loss of one chunk of pairs: global mean over pairs (+ RPO over chosen tokens)."""

        def loss(logits: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
            targets, ref = unpack_targets(packed)
            logps, counts = sequence_logps(logits, targets)
            ref = ref.to(logps.device, torch.float32)
            if self.loss == "ipo":  # IPO compares length-normalised log-probs
                logps, ref = logps / counts.clamp(min=1), ref / counts.clamp(min=1)
            losses, rc, rr = dpo_losses(logps[0::2], logps[1::2], ref[0::2], ref[1::2], self.beta, self.loss,
                                        self.label_smoothing)
            total = losses.sum() * pair_scale
            if self.rpo_alpha:
                chosen_sum = sequence_logps(logits[0::2], targets[0::2])[0].sum()
                total = total - self.rpo_alpha * chosen_sum * token_scale
            self._record((packed.data_ptr(), tuple(packed.shape)), rc, rr, logps.detach())
            return total

        return loss

    def _record(self, key: tuple[int, tuple[int, ...]], rc: torch.Tensor, rr: torch.Tensor, logps: torch.Tensor) -> None:
        values = [rc.sum(), rr.sum(), (rc > rr).float().sum(), (rc - rr).sum(), logps[0::2].sum(), logps[1::2].sum(),
                  torch.tensor(float(rc.numel()))]
        self._stats[key] = torch.stack([v.double().cpu() for v in values])

    def metrics(self) -> dict[str, Any]:
        """Means over the step's pairs of every rank: rewards, accuracy, margin, log-probs."""
        import torch.distributed as dist

        from auroragpt.train.objectives import collective_device

        stats = torch.stack(list(self._stats.values())).sum(0) if self._stats else torch.zeros(len(STATS) + 1, dtype=torch.float64)
        if dist.is_initialized() and self.layout.world_size > 1:
            stats = stats.to(collective_device())
            dist.all_reduce(stats)  # loss holders: every data-parallel rank, tp times each
            stats = stats.cpu() / self.layout.tp
        n = max(float(stats[-1]), 1.0)
        return {name: float(stats[i]) / n for i, name in enumerate(STATS)}


def build_dpo_objective(cfg, runner, model_cfg, info, loader) -> DPOObjective:
    from auroragpt.train.reference import build_reference

    reference = build_reference(cfg, runner, model_cfg, info, loader.dataset.plan)
    p = cfg.post
    return DPOObjective(runner.layout, reference, p.beta, p.loss, p.label_smoothing, p.rpo_alpha)
