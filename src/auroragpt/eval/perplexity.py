"""Loss and perplexity per corpus on the validation split of a data-file-list.

Each rank scores its share of the validation samples (sample i goes to rank i mod world size);
per-corpus sums of token losses and token counts are then all-reduced, so the result does not
depend on the number of ranks. Samples come from the blend plan with split="valid", the same
held-out documents training never sees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auroragpt.log import get_logger

log = get_logger(__name__)


@torch.inference_mode()
def token_losses(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of each row of `batch` [B, T+1] (inputs then shifted targets)."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs).float()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return losses.view(targets.shape).sum(dim=1, dtype=torch.float64)


def sample_totals(model: torch.nn.Module, num_samples: int, sample: Callable[[int], np.ndarray],
                  corpus_of: Callable[[int], str], corpora: Sequence[str], rank: int = 0, world_size: int = 1,
                  micro_batch: int = 8) -> torch.Tensor:
    """[3, corpora] summed loss, predicted tokens and samples (on CPU), all-reduced across ranks."""
    device = next(model.parameters()).device
    column = {name: j for j, name in enumerate(corpora)}
    # Row 0: summed loss, row 1: predicted tokens, row 2: samples; one column per corpus.
    totals = torch.zeros(3, len(corpora), dtype=torch.float64, device=device)
    mine = list(range(rank, num_samples, world_size))
    for start in range(0, len(mine), micro_batch):
        ids = mine[start:start + micro_batch]
        batch = torch.from_numpy(np.stack([np.asarray(sample(i), dtype=np.int64) for i in ids])).to(device)
        losses = token_losses(model, batch)
        cols = torch.tensor([column[corpus_of(i)] for i in ids], device=device)
        totals[0].index_add_(0, cols, losses)
        totals[1].index_add_(0, cols, torch.full((len(ids),), float(batch.shape[1] - 1), dtype=torch.float64, device=device))
        totals[2].index_add_(0, cols, torch.ones(len(ids), dtype=torch.float64, device=device))
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    return totals.cpu()


def _summarise(totals: torch.Tensor, corpora: Sequence[str]) -> dict:
    def entry(loss_sum: float, tokens: float, samples: float) -> dict:
        # A corpus with no validation samples gets None (JSON null), not NaN.
        loss = loss_sum / tokens if tokens else None
        return {"loss": loss, "perplexity": math.exp(loss) if loss is not None else None,
                "tokens": int(tokens), "samples": int(samples)}

    per_corpus = {name: entry(*totals[:, j].tolist()) for j, name in enumerate(corpora)}
    return {"corpora": per_corpus, "overall": entry(*totals.sum(dim=1).tolist())}


def evaluate_perplexity(model: torch.nn.Module, file_list_path: str | os.PathLike, seq_len: int, num_samples: int,
                        seed: int = 1234, valid_fraction: float | None = None, rank: int = 0, world_size: int = 1,
                        micro_batch: int = 8) -> dict:
    """Loss/perplexity of each corpus on its own validation split: up to `num_samples` windows per
    corpus, each window scored once when the split holds fewer (a small corpus is measured as
    well as a large one, instead of by its share of the training mix)."""
    from auroragpt.data.blend import build_blend_plan
    from auroragpt.data.filelist import FileList, parse_file_list
    from auroragpt.errors import DataError

    file_list = parse_file_list(file_list_path)
    kwargs = {} if valid_fraction is None else {"valid_fraction": valid_fraction}
    corpora = list(file_list.corpora)
    totals = torch.zeros(3, len(corpora), dtype=torch.float64)
    covered: dict[str, tuple[int, float]] = {}
    for j, name in enumerate(corpora):
        own = FileList(file_list.path, tuple(e for e in file_list.entries if e.corpus == name))
        try:
            plan = build_blend_plan(own, seq_len, num_samples, seed, split="valid", **kwargs)
        except DataError as err:  # no window of seq_len + 1 tokens held out for this corpus
            log.warning("corpus %s: %s", name, err.message)
            continue
        windows = plan.summary()[0].windows
        if windows < num_samples:  # score each window of the split once
            plan = build_blend_plan(own, seq_len, windows, seed, split="valid", **kwargs)
        totals[:, j:j + 1] = sample_totals(model, len(plan), plan.sample, plan.corpus_of, [name], rank, world_size,
                                           micro_batch)
        summary = plan.summary()[0]
        covered[name] = (summary.tokens, summary.epochs)
    result = _summarise(totals, corpora)
    for name, (tokens, epochs) in covered.items():
        # How much of each corpus's validation split the samples covered (1.0 = all of it once).
        result["corpora"][name]["validation_tokens"] = tokens
        result["corpora"][name]["validation_epochs"] = round(epochs, 4)
    result.update({"data_file_list": str(file_list_path), "seq_len": seq_len, "split": "valid", "seed": seed})
    return result


def perplexity_table(result: dict):
    """A rich Table: one row per corpus, then the total."""
    from rich.table import Table

    table = Table(title=f"validation perplexity (seq_len {result.get('seq_len')})")
    columns = ("corpus", "samples", "tokens", "loss", "perplexity", "split covered")
    for name in columns:
        justify = "left" if name == "corpus" else "right"
        table.add_column(name, justify=justify)
    rows = list(result["corpora"].items()) + [("all", result["overall"])]
    for row, (name, r) in enumerate(rows):
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        ppl = "-" if r["perplexity"] is None else f"{r['perplexity']:.3f}"
        covered = f"{r['validation_epochs']:.2f}x" if "validation_epochs" in r else ""
        table.add_row(name, f"{r['samples']:,}", f"{r['tokens']:,}", loss, ppl, covered,
                      end_section=row == len(rows) - 2)
    return table


def write_json(result: dict, path: str | os.PathLike) -> Path:
    """Write `result` to `path` atomically (temporary name, then rename)."""
    from auroragpt.atomic import write_atomically

    return write_atomically(path, json.dumps(result, indent=2) + "\n")
