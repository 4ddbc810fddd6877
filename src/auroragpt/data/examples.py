"""Post-training examples (SFT rows, DPO pairs) as a closed-form sample order, fed to the blend loader.

Sample i of the run is example `perm_e(i mod N)` of epoch e = i div N, where perm_e is a seeded
permutation of the N examples: like the blend plan, any sample is found without replaying the
run, so resume is exact. `samples_batch` returns int64 rows the existing `BlendLoader` and
`MicroBatchDataset` carry unchanged; the loss mask travels in the sign of each token:

    row[j] = token_j           when token_j is a training target (loss mask 1)
    row[j] = -(token_j + 1)    when it is not (prompt, padding)

`decode_rows` turns rows back into (inputs, targets with -100 where no loss). A DPO sample is
a pair: rows 2k (chosen) and 2k+1 (rejected), each with one extra last column holding the
pair's example index (the key of the reference log-prob cache). With `pack`, SFT examples are
packed best-fit-decreasing into rows (see auroragpt.data.packing).
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
                 pairs: bool, pack: bool = False) -> None:
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
        self.rows: list[list[int]] | None = None
        self.num_units = self.num_examples
        if pack:
            from auroragpt.data.packing import best_fit_decreasing

            lengths = np.concatenate([ds.sequence_lengths for ds in self.tokens])
            self.rows = best_fit_decreasing(lengths, seq_len + 1)
            self.num_units = len(self.rows)

    def __len__(self) -> int:
        return self.num_samples

    def example_of(self, sample: int) -> int:
        epoch, k = divmod(int(sample), self.num_units)
        if getattr(self, "_epoch", None) != epoch:  # one permutation kept: samples come in order
            self._epoch, self._perm = epoch, np.random.default_rng((self.seed, epoch)).permutation(self.num_units)
        return int(self._perm[k])

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
    """The plan of an SFT or DPO run over the prefixes of data.file_list (weights: see README)."""
    from auroragpt.data.filelist import parse_file_list

    entries = parse_file_list(cfg.data.file_list).entries
    return ExamplePlan([e.prefix for e in entries], cfg.data.seq_len, steps * cfg.data.global_batch, cfg.data.seed,
                       pairs=cfg.train.objective == "dpo", pack=cfg.post.pack and cfg.train.objective == "sft")
