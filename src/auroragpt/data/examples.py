"""Post-training examples (SFT rows, DPO pairs) as a closed-form sample order, fed to the blend loader.

The data-file-list's weights mean what they mean in pretraining: a file of weight 0.3 gives 30%
of the samples. Files are interleaved by the blend plan's own level-1 schedule (weights
apportioned over a period of Q samples, laid out by Tijdeman's chairman rule, so every window of
the run holds each file within about 2 samples of weight x window); sample i is then use
k = (i div Q) x count_f + rank(i mod Q) of its file f, and the k-th use of a file of N examples is
example `perm_{f,e}(k mod N)` of that file's epoch e = k div N (a seeded permutation, fresh each
epoch): every epoch of a file shows each of its examples once. Like the blend plan, any sample
is found without replaying the run, so resume is exact. `samples_batch` returns int64 rows the existing `BlendLoader` and
`MicroBatchDataset` carry unchanged; the loss mask travels in the sign of each token:

    row[j] = token_j           when token_j is a training target (loss mask 1)
    row[j] = -(token_j + 1)    when it is not (prompt, padding)

`decode_rows` turns rows back into (inputs, targets with -100 where no loss). A DPO sample is
a pair: rows 2k (chosen) and 2k+1 (rejected), each with one extra last column holding the
pair's example index (the key of the reference log-prob cache). With `pack`, each file's SFT
examples are packed best-fit-decreasing into rows (see auroragpt.data.packing), and the weights
are shares of rows.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

from auroragpt.data.conversations import mask_prefix
from auroragpt.data.indexed import IndexedDataset
from auroragpt.errors import DataError

IGNORE = -100


class ExamplePlan:
    """Samples of one run over the examples of `prefixes` (each with its loss-mask sidecar)."""

    def __init__(self, prefixes: Sequence[str | os.PathLike], seq_len: int, num_samples: int, seed: int,
                 pairs: bool, pack: bool = False, weights: Sequence[float] | None = None) -> None:
        self.tokens = [IndexedDataset(p) for p in prefixes]
        self.masks = []
        for p, ds in zip(prefixes, self.tokens):
            try:
                self.masks.append(IndexedDataset(mask_prefix(str(ds.prefix))))
            except DataError:
                raise DataError(f"{ds.prefix}: no loss-mask sidecar ({mask_prefix(str(ds.prefix))}.bin/.idx)",
                                hint="make SFT/DPO data with `auroragpt data tokenize --format chat|completion|preference`") from None
        per_doc = 2 if pairs else 1
        for ds in self.tokens:
            if len(ds) != per_doc * ds.num_documents:
                kind = "preference pairs (2 sequences per document)" if pairs else "single examples"
                raise DataError(f"{ds.prefix}: not {kind}",
                                hint="tokenize with --format preference for DPO, chat or completion for SFT")
        self.seq_len, self.num_samples, self.seed, self.pairs = seq_len, num_samples, seed, pairs
        counts = np.array([ds.num_documents for ds in self.tokens], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.num_examples = int(self.starts[-1])
        if self.num_examples == 0:
            raise DataError(f"no examples in {', '.join(map(str, prefixes))}")
        self.rows: list[list[int]] | None = None  # packed rows of example indices, file after file
        unit_counts = counts
        if pack:
            from auroragpt.data.packing import best_fit_decreasing

            per_file = [best_fit_decreasing(ds.sequence_lengths, seq_len + 1) for ds in self.tokens]
            self.rows = [[int(self.starts[f]) + e for e in row] for f, rows in enumerate(per_file) for row in rows]
            unit_counts = np.array([len(rows) for rows in per_file], dtype=np.int64)
        self.unit_starts = np.concatenate([[0], np.cumsum(unit_counts)])
        self.num_units = int(self.unit_starts[-1])
        self._schedule(np.ones(len(self.tokens)) if weights is None else np.asarray(weights, dtype=np.float64))
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _schedule(self, weights: np.ndarray) -> None:
        """The blend plan's level-1 schedule over the files (a file without examples gets no slot)."""
        from auroragpt.data.blend import apportion, chairman_schedule, schedule_period

        weights = np.where(np.diff(self.unit_starts) > 0, weights, 0.0)
        period = schedule_period(self.num_samples, len(weights))
        self.counts = apportion(weights, period, at_least_one=True)
        self.owner, self.rank = chairman_schedule(self.counts)

    def __len__(self) -> int:
        return self.num_samples

    def file_of(self, sample: int) -> int:
        return int(self.owner[int(sample) % len(self.owner)])

    def example_of(self, sample: int) -> int:
        """The unit (example, or packed row) of sample i: closed form, see the module docstring."""
        j = int(sample) % len(self.owner)
        f = int(self.owner[j])
        use = (int(sample) // len(self.owner)) * int(self.counts[f]) + int(self.rank[j])
        size = int(self.unit_starts[f + 1] - self.unit_starts[f])
        epoch, k = divmod(use, size)
        kept = self._perms.get(f)
        if kept is None or kept[0] != epoch:  # one permutation kept per file: its uses come in order
            # (file 0 keeps the key of single-file plans made before weights applied: their runs resume alike)
            key = (self.seed, epoch) if f == 0 else (self.seed, epoch, f)
            kept = self._perms[f] = (epoch, np.random.default_rng(key).permutation(size))
        return int(self.unit_starts[f]) + int(kept[1][k])

    def example_sequences(self, example: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(tokens, mask) of each sequence of one example (two for a pair: chosen, rejected)."""
        k = int(np.searchsorted(self.starts, example, side="right") - 1)
        doc = example - int(self.starts[k])
        ds, ms = self.tokens[k], self.masks[k]
        return [(ds.get(s).astype(np.int64), ms.get(s).astype(np.int64)) for s in ds.document_sequences(doc)]

    def encoded_row(self, tokens: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
        row = np.full(width, -1, dtype=np.int64)  # padding: token 0, no loss
        tokens, mask = tokens[:width], mask[:width]
        row[: tokens.size] = np.where(mask > 0, tokens, -(tokens + 1))
        return row

    def samples_batch(self, indices: np.ndarray) -> np.ndarray:
        width = self.seq_len + 1
        rows = []
        if self.rows is not None:
            from auroragpt.data.packing import packed_row

            for i in indices.tolist():
                members = self.rows[self.example_of(i)]
                rows.append(packed_row([self.example_sequences(e)[0] for e in members], width))
            return np.stack(rows)
        for i in indices.tolist():
            example = self.example_of(i)
            for tokens, mask in self.example_sequences(example):
                row = self.encoded_row(tokens, mask, width)
                rows.append(np.append(row, example) if self.pairs else row)
        return np.stack(rows)

    @cached_property
    def data_digest(self) -> str:
        """Of every dataset's index and recipe (which holds the tokenizer and template digests)."""
        import hashlib

        h = hashlib.sha256()
        for ds in self.tokens:
            h.update(ds.idx_path.read_bytes())
            recipe = os.fspath(ds.prefix) + ".recipe.json"
            if os.path.exists(recipe):
                h.update(open(recipe, "rb").read())
        return h.hexdigest()


def decode_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of sign-encoded rows [B, S+1]: targets hold IGNORE where there is no loss."""
    tokens = torch.where(rows >= 0, rows, -rows - 1)
    targets = torch.where(rows[:, 1:] >= 0, rows[:, 1:], torch.full_like(rows[:, 1:], IGNORE))
    return tokens[:, :-1], targets


def decode_packed_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [B, 2, S]: token ids and document ids, targets) of packed rows [B, 2 (S+1)]; no
    target crosses from one example into the next."""
    width = rows.shape[1] // 2
    tokens, targets = decode_rows(rows[:, :width])
    documents = rows[:, width:]
    crossing = documents[:, 1:] != documents[:, :-1]
    targets = torch.where(crossing, torch.full_like(targets, IGNORE), targets)
    return torch.stack([tokens, documents[:, :-1]], dim=1), targets


def build_example_plan(cfg, steps: int) -> ExamplePlan:
    """The plan of an SFT or DPO run over the prefixes and weights of data.file_list."""
    from auroragpt.data.filelist import parse_file_list

    entries = parse_file_list(cfg.data.file_list).entries
    return ExamplePlan([e.prefix for e in entries], cfg.data.seq_len, steps * cfg.data.global_batch, cfg.data.seed,
                       pairs=cfg.train.objective == "dpo", pack=cfg.post.pack and cfg.train.objective == "sft",
                       weights=[e.weight for e in entries])
