"""The blend plan: global sample i -> the S+1 tokens it reads, computed on demand.

Nothing here is O(tokens) or O(samples): building the plan reads each file's index header and
`.bin` size (plus one 8-byte pointer per file when a validation split is asked for) and runs one
short integer schedule; every sample is then located by arithmetic. Three levels:

1. **Corpus interleaving.** Corpus shares are rounded to multiples of 1/Q (each share at least
   1/Q) and laid out over one period of Q samples by Tijdeman's chairman-assignment rule, which
   keeps every prefix count within 1 - 1/(2K-2) of share x length for K corpora; the period
   repeats exactly. A window of W consecutive samples therefore holds each corpus within
   2 - 1/(K-1) of share x W, and within that plus W/Q of weight x W: within 2 of the requested
   weights for every window up to Q/(K-1) samples. Q = min((K-1) x samples, 2**20), so a run of up
   to 2**20/(K-1) samples (100,000 for 11 corpora) meets the bound for every window, the whole run
   included; a longer run meets it for every window up to 2**20/(K-1) samples (far above a global
   batch), and a window of W samples beyond that drifts by less than W / 2**20 (under 470 samples
   of 4.9e8: 2T tokens at S=4096). Sample i is corpus `seq[i % Q]`, and its index inside that
   corpus's stream is `(i // Q) * count + rank[i % Q]`.
2. **Files within a corpus.** A corpus's stream is cut into periods of one corpus epoch (its
   windows of S tokens, plus the share its files shorter than one sample get by weight; or the
   whole run when shorter). Each file owns a block of slots per period, sized by its weight
   (largest remainder); a keyed Feistel permutation of the slots, fresh each period, decides
   which file serves each stream index. The last, partial period is apportioned
   on its own, so every file gets its share of the run within one sample per period. When file
   weights follow file sizes (within 0.1%), each file gets exactly its window count per period,
   so every period is one whole epoch of the corpus; a file weighted off its size repeats at its
   own rate, and its epochs may then overlap by up to one period.
3. **Windows within a file.** A file's split is a token range; it holds W = (tokens - 1) // S
   windows of S+1 tokens (neighbours share one token, as in Megatron's GPT dataset). The m-th use
   of a file is epoch m // W, window perm_epoch(m % W), shifted by a per-epoch phase, so every
   epoch visits every window once, in a fresh order, and cuts documents at new places.
   A file shorter than one sample (T <= S tokens in its split, which megatron-core accepts and
   repeats over epochs) is read as its tokens repeated: its m-th use starts at token (m x S) mod T
   of the cycle, so its uses tile the repeated file as megatron-core's samples do, and it is
   drawn in proportion to its weight like any other file (its slots come from its weight, not
   from a window count).

Documents reach the model in shuffled order (whole windows are shuffled; a sample may span
document boundaries). The validation split is the last documents of each file, decided from
counts only, so it shares no document with training. Keys derive from (seed, split, ids) through
`permutation.derive_key`: the same list, S, sample count and seed give the same plan anywhere.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from auroragpt.data.filelist import FileEntry, FileList
from auroragpt.data.indexed import HEADER_SIZE, IndexedDataset, read_index_value
from auroragpt.data.permutation import derive_key, mix64, permute, subkey
from auroragpt.errors import DataError

SPLITS = {"train": 0, "valid": 1}
_TAG_SLOT, _TAG_WINDOW, _TAG_PHASE = 11, 12, 13
MAX_SCHEDULE_PERIOD = 2**20  # 12 MiB of schedule, about 0.6 s to build once


# -- level 1: corpus interleaving ------------------------------------------------------------------
def apportion(weights: np.ndarray, total: int, at_least_one: bool = False) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (largest remainder, ties by index)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    quotas = weights / weights.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(weights)), -(quotas - counts)))
        counts[order[:short]] += 1
    if at_least_one and total >= len(weights):
        while (missing := np.flatnonzero((counts == 0) & (weights > 0))).size:
            # Take the slot from the corpus most above its quota: its count stays within 1 of it.
            excess = np.where(counts >= 2, counts - quotas, -np.inf)
            donor = int(np.argmax(excess)) if np.isfinite(excess).any() else int(np.argmax(counts))
            counts[donor] -= 1
            counts[missing[0]] += 1
    return counts


def schedule_period(num_samples: int, num_corpora: int) -> int:
    """Q for the corpus schedule: long enough that rounding shares to 1/Q costs no window of the
    run its "within 2 of weight x window" (Tijdeman leaves 1/(K-1) of slack, rounding spends at
    most W/Q), capped at MAX_SCHEDULE_PERIOD; at least K so that every corpus gets a slot."""
    return max(min(num_samples * max(num_corpora - 1, 1), MAX_SCHEDULE_PERIOD), num_corpora, 1)


def chairman_schedule(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One period (sum(counts) steps) of Tijdeman's chairman assignment for shares counts/Q.

    Returns (owner of each step, rank of the step among its owner's steps). Every prefix of length
    s holds owner c within 1 of s * counts[c] / Q (Tijdeman 1980, with sigma = 1/(2K-2)), and the
    period ends with exactly counts[c] steps of c, so repeating it keeps the bound forever.
    """
    counts = np.asarray(counts, dtype=np.int64)
    period = int(counts.sum())
    owner = np.empty(period, dtype=np.int32)
    active = [c for c in range(len(counts)) if counts[c] > 0]
    if len(active) == 1:
        owner[:] = active[0]
    else:
        lam = 2 * len(active) - 2  # sigma = 1/lam
        share = counts.tolist()
        given = [0] * len(share)
        steps = [0] * period
        # Owner c becomes a candidate at the first step s with s*p_c - n_c >= sigma (its release)
        # and is due by (n_c + 1 - sigma) / p_c (its deadline, up to a common factor); among
        # candidates the earliest deadline wins. Integer releases keep this exact.
        pending = [(-(-period // (lam * share[c])), c) for c in active]
        heapq.heapify(pending)
        ready: list[tuple[float, int]] = []
        push, pop = heapq.heappush, heapq.heappop
        for step in range(1, period + 1):
            while pending and pending[0][0] <= step:
                c = pop(pending)[1]
                push(ready, ((lam * (given[c] + 1) - 1) / share[c], c))
            c = pop(ready)[1]
            steps[step - 1] = c
            n = given[c] = given[c] + 1
            if n < share[c]:
                push(pending, (-(-period * (1 + lam * n) // (lam * share[c])), c))
        owner[:] = steps
    rank = np.empty(period, dtype=np.int64)
    for c in active:
        where = np.flatnonzero(owner == c)
        rank[where] = np.arange(len(where))
    return owner, rank


# -- the plan --------------------------------------------------------------------------------------
@dataclass
class CorpusSummary:
    name: str
    weight: float  # requested share
    samples: int  # samples of the run drawn from it
    windows: int  # windows of S+1 tokens in one epoch of it (this split)
    files: int
    tokens: int  # tokens of this split

    @property
    def epochs(self) -> float:
        return self.samples / self.windows if self.windows else 0.0


@dataclass
class BlendPlan:
    """Maps global sample i (0 <= i < len(plan)) to S+1 tokens. Holds O(files + Q) numbers."""

    file_list: FileList
    seq_len: int
    num_samples: int
    seed: int
    split: str
    valid_fraction: float
    # per file (list order)
    token_begin: np.ndarray
    token_end: np.ndarray
    windows: np.ndarray
    slack: np.ndarray
    file_corpus: np.ndarray
    # corpus schedule
    corpus_names: list[str]
    corpus_weights: np.ndarray
    schedule_owner: np.ndarray
    schedule_rank: np.ndarray
    schedule_counts: np.ndarray
    corpus_samples: np.ndarray
    # files within corpora: slot blocks per period, files grouped by corpus
    corpus_period: np.ndarray
    corpus_full_periods: np.ndarray
    corpus_first: np.ndarray  # index into the grouped order where each corpus starts
    grouped_files: np.ndarray  # file index, grouped by corpus
    slots_full: np.ndarray  # per grouped file: slots per full period
    slots_last: np.ndarray  # per grouped file: slots in the last, partial period
    base_full: np.ndarray  # grouped exclusive prefix sums of slots_full (non-decreasing)
    base_last: np.ndarray
    build_seconds: float = 0.0
    _datasets: dict[int, IndexedDataset] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict:  # DataLoader workers re-open the files they touch
        state = dict(self.__dict__)
        state["_datasets"] = {}
        return state

    # -- locating ------------------------------------------------------------------------------
    def _key(self, tag: int, ident: np.ndarray, counter: np.ndarray) -> np.ndarray:
        base = derive_key(self.seed & 0xFFFFFFFFFFFFFFFF, SPLITS[self.split], tag)
        return subkey(base, ident, counter)

    def corpus_of_batch(self, indices: np.ndarray) -> np.ndarray:
        """Corpus number (index into `corpus_names`) of each sample."""
        i = np.asarray(indices, dtype=np.int64)
        return self.schedule_owner[i % len(self.schedule_owner)]

    def corpus_of(self, i: int) -> str:
        return self.corpus_names[int(self.corpus_of_batch(np.array([self._check(i)]))[0])]

    def locate_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file index, first token position in that file's .bin) of each sample; pure arithmetic."""
        i = np.asarray(indices, dtype=np.int64)
        if i.size and (i.min() < 0 or i.max() >= self.num_samples):
            raise IndexError(f"sample indices must lie in [0, {self.num_samples})")
        period = len(self.schedule_owner)
        j = i % period
        corpus = self.schedule_owner[j].astype(np.int64)
        k = (i // period) * self.schedule_counts[corpus] + self.schedule_rank[j]
        # level 2: which file of the corpus, and its use number m
        q = self.corpus_period[corpus]
        p = k // q
        pos = k - p * q
        last = p == self.corpus_full_periods[corpus]
        domain = np.where(last, self.corpus_samples[corpus] - p * q, q)
        slot = permute(pos, domain, self._key(_TAG_SLOT, corpus, p)).astype(np.int64)
        g = np.empty_like(slot)
        m = np.empty_like(slot)
        for is_last, base in ((False, self.base_full), (True, self.base_last)):
            sel = np.flatnonzero(last == is_last)
            if not sel.size:
                continue
            target = base[self.corpus_first[corpus[sel]]] + slot[sel]
            gi = np.searchsorted(base, target, side="right") - 1
            g[sel] = gi
            m[sel] = p[sel] * self.slots_full[gi] + (target - base[gi])
        f = self.grouped_files[g]
        # level 3: which window of the file
        w = self.windows[f]
        epoch = m // w
        key = self._key(_TAG_WINDOW, f, epoch)
        window = permute(m - epoch * w, w, key).astype(np.int64)
        phase = (mix64(key ^ np.uint64(_TAG_PHASE)) % (self.slack[f] + 1).astype(np.uint64)).astype(np.int64)
        start = self.token_begin[f] + phase + window * self.seq_len
        cycle = self.token_end[f] - self.token_begin[f]
        short = cycle <= self.seq_len  # read as the file repeated: use m starts at (m x S) mod T
        if short.any():
            start = np.where(short, self.token_begin[f] + (m * self.seq_len) % np.maximum(cycle, 1), start)
        return f, start

    # -- reading -------------------------------------------------------------------------------
    def dataset(self, f: int) -> IndexedDataset:
        ds = self._datasets.get(f)
        if ds is None:
            ds = self._datasets[f] = IndexedDataset(self.file_list.entries[f].prefix)
        return ds

    def _check(self, i: int) -> int:
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for a plan of {self.num_samples} samples")
        return int(i)

    def _read(self, f: int, start: int) -> np.ndarray:
        """The S+1 tokens from `start` in file f's split, wrapping around in a file shorter than that."""
        n, begin, end = self.seq_len + 1, int(self.token_begin[f]), int(self.token_end[f])
        if start + n <= end:
            return self.dataset(f).read_tokens(start, n)
        cycle = self.dataset(f).read_tokens(begin, end - begin)
        return cycle[(start - begin + np.arange(n)) % (end - begin)]

    def sample(self, i: int) -> np.ndarray:
        """The S+1 tokens of sample i as int64."""
        f, start = self.locate_batch(np.array([self._check(i)]))
        return self._read(int(f[0]), int(start[0])).astype(np.int64)

    def samples_batch(self, indices: np.ndarray) -> np.ndarray:
        """[len(indices), S+1] int64 tokens."""
        files, starts = self.locate_batch(np.asarray(indices, dtype=np.int64))
        out = np.empty((len(files), self.seq_len + 1), dtype=np.int64)
        for row, (f, start) in enumerate(zip(files.tolist(), starts.tolist())):
            out[row] = self._read(f, start)
        return out

    def spans_batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Flat arrays (sample position in `indices`, file, document, offset, length), in reading order.

        Documents are the index's documents (a Megatron file may store one as several sequences;
        offsets count from the document's first token), one span per contiguous piece of a document
        a sample reads (one per document, except in a file shorter than a sample, which repeats).
        Only the index pages around each sample's position are touched (binary searches).
        """
        files, starts = self.locate_batch(np.asarray(indices, dtype=np.int64))
        rows: list[np.ndarray] = []
        for f in np.unique(files).tolist():
            sel = np.flatnonzero(files == f)
            ds = self.dataset(f)
            itemsize = ds.dtype.itemsize
            pointers, lengths = ds.sequence_pointers, ds.sequence_lengths
            pos = starts[sel].copy()
            remaining = np.full(len(sel), self.seq_len + 1, dtype=np.int64)
            doc = np.searchsorted(pointers, pos * itemsize, side="right") - 1
            begin, end = int(self.token_begin[f]), int(self.token_end[f])
            first_doc = int(np.searchsorted(pointers, begin * itemsize, side="right") - 1)
            active = np.arange(len(sel))
            step = 0
            while active.size:
                d = doc[active]
                doc_start = pointers[d] // itemsize
                offset = pos[active] - doc_start
                take = np.minimum(lengths[d].astype(np.int64) - offset, remaining[active])
                take = np.minimum(take, end - pos[active])  # a short file's split ends inside the sample
                emit = take > 0
                rows.append(np.stack([sel[active][emit], np.full(emit.sum(), f), d[emit], offset[emit], take[emit],
                                      np.full(emit.sum(), step)], axis=1))
                pos[active] += np.maximum(take, 0)
                remaining[active] -= np.maximum(take, 0)
                doc[active] += 1
                wrap = active[pos[active] >= end]  # only in a file shorter than a sample: start it again
                pos[wrap], doc[wrap] = begin, first_doc
                active = active[remaining[active] > 0]
                step += 1
        if not rows:
            return tuple(np.empty(0, dtype=np.int64) for _ in range(5))
        table = np.concatenate(rows).astype(np.int64)
        table = table[np.lexsort((table[:, 5], table[:, 0]))]  # reading order within each sample
        return self._sequences_to_documents(table[:, :5])

    def _sequences_to_documents(self, table: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows (sample, file, sequence, offset, length) -> (sample, file, document, offset in the
        document, length), pieces of one document in one sample merged."""
        doc = table[:, 2].copy()
        offset = table[:, 3].copy()
        for f in np.unique(table[:, 1]).tolist():
            ds = self.dataset(f)
            if ds.num_documents == len(ds):
                continue  # one sequence per document (what we write): numbers and offsets agree
            sel = np.flatnonzero(table[:, 1] == f)
            seq = table[sel, 2]
            d = np.searchsorted(ds.document_indices, seq, side="right") - 1
            first = ds.document_indices[d]
            offset[sel] += (ds.sequence_pointers[seq] - ds.sequence_pointers[first]) // ds.dtype.itemsize
            doc[sel] = d
        starts = np.flatnonzero(np.concatenate([[True], (table[1:, 0] != table[:-1, 0])
                                                | (table[1:, 1] != table[:-1, 1]) | (doc[1:] != doc[:-1])
                                                | (offset[1:] != offset[:-1] + table[:-1, 4])]))
        length = np.add.reduceat(table[:, 4], starts) if len(table) else table[:, 4]
        return table[starts, 0], table[starts, 1], doc[starts], offset[starts], length

    def spans(self, i: int) -> list[tuple[int, int, int, int]]:
        """[(file index, document, offset, length), ...] covering the S+1 tokens of sample i."""
        _, f, d, o, n = self.spans_batch(np.array([self._check(i)]))
        return list(zip(f.tolist(), d.tolist(), o.tolist(), n.tolist()))

    # -- reporting -----------------------------------------------------------------------------
    def summary(self) -> list[CorpusSummary]:
        out = []
        for c, name in enumerate(self.corpus_names):
            members = np.flatnonzero(self.file_corpus == c)
            real_windows = np.maximum(self.token_end[members] - self.token_begin[members] - 1, 0) // self.seq_len
            out.append(
                CorpusSummary(
                    name,
                    float(self.corpus_weights[c]),
                    int(self.corpus_samples[c]),
                    int(real_windows.sum()),
                    len(members),
                    int((self.token_end[members] - self.token_begin[members]).sum()),
                )
            )
        return out

    def memory_bytes(self) -> int:
        """Bytes held by the plan's arrays (everything is O(files + Q))."""
        return sum(v.nbytes for v in self.__dict__.values() if isinstance(v, np.ndarray))


# -- building --------------------------------------------------------------------------------------
def _corpus_epochs(file_corpus: np.ndarray, file_weight: np.ndarray, windows: np.ndarray,
                   num_corpora: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples in one epoch of each corpus, and how many of them go to its files shorter than a
    sample. An epoch is the windows of its other files plus the short files' share at their
    weight (ceil(short weight / other weight x windows)); a corpus of short files only has no
    windows to measure by, and takes the longest period (its files then drawn to 2**-20 of
    their weights)."""
    epoch = np.zeros(num_corpora, dtype=np.int64)
    short_slots = np.zeros(num_corpora, dtype=np.int64)
    for c in range(num_corpora):
        members = (file_corpus == c) & (file_weight > 0)
        long_files, short_files = members & (windows > 0), members & (windows == 0)
        long_windows = int(windows[long_files].sum())
        if not long_windows:
            epoch[c] = MAX_SCHEDULE_PERIOD
            short_slots[c] = MAX_SCHEDULE_PERIOD
            continue
        extra = 0.0
        if short_files.any():
            extra = math.ceil(file_weight[short_files].sum() / file_weight[long_files].sum() * long_windows)
        short_slots[c] = int(min(extra, 2**62))
        epoch[c] = int(min(long_windows + extra, 2**62))
    return epoch, short_slots


def held_out_documents(num_documents: int, valid_fraction: float) -> int:
    """How many of a file's last documents form its validation split: ceil(n x fraction), but a
    file keeps at least one training document (a one-document file stays wholly in training)."""
    if valid_fraction <= 0 or num_documents < 2:
        return 0
    return min(num_documents - 1, math.ceil(num_documents * valid_fraction))


def _split_point(entry: FileEntry, first_valid_document: int) -> int:
    """Token position where document `first_valid_document` starts: one or two 8-byte reads."""
    n_seq, n_doc = entry.num_sequences, entry.num_documents
    if first_valid_document >= n_doc:
        return entry.num_tokens
    sequence = first_valid_document
    if n_seq != n_doc:  # documents split into several sequences: look up where this one starts
        offset = HEADER_SIZE + 12 * n_seq + 8 * first_valid_document
        sequence = read_index_value(entry.prefix, offset, "<q", f"document index {first_valid_document}")
        if not 0 <= sequence <= n_seq:
            raise DataError(f"{entry.prefix}.idx: document {first_valid_document} starts at sequence {sequence}")
        if sequence == n_seq:
            return entry.num_tokens
    pointer = read_index_value(entry.prefix, HEADER_SIZE + 4 * n_seq + 8 * sequence, "<q", f"pointer {sequence}")
    itemsize = entry.dtype.itemsize
    if pointer < 0 or pointer % itemsize or pointer // itemsize > entry.num_tokens:
        raise DataError(f"{entry.prefix}.idx: sequence {sequence} has an impossible pointer {pointer}")
    return pointer // itemsize


def build_blend_plan(
    file_list: FileList,
    seq_len: int,
    num_samples: int,
    seed: int = 1234,
    split: str = "train",
    valid_fraction: float = 0.01,
) -> BlendPlan:
    """Build the plan for `num_samples` samples of `seq_len`+1 tokens. O(files) work and memory.

    `valid_fraction` of each file's documents (its last ones; see `held_out_documents`) form the
    "valid" split; "train" gets the rest. Both splits must be built with the same fraction.
    """
    import time

    started = time.perf_counter()
    _check_plan_arguments(file_list, seq_len, num_samples, split, valid_fraction)
    entries = file_list.entries
    begin, end = _split_ranges(entries, split, valid_fraction)
    windows = np.maximum(end - begin - 1, 0) // seq_len
    slack = np.maximum(end - begin - 1 - windows * seq_len, 0)
    names = file_list.corpora
    corpus_index = {name: c for c, name in enumerate(names)}
    file_corpus = np.array([corpus_index[e.corpus] for e in entries], dtype=np.int64)
    file_weight, corpus_weights = _weights(file_list, seq_len, split, begin, end, windows, file_corpus)

    period = schedule_period(num_samples, len(names))
    counts = apportion(corpus_weights, period, at_least_one=True)
    owner, rank = chairman_schedule(counts)
    full, rest = divmod(num_samples, period)
    corpus_samples = full * counts + np.bincount(owner[:rest], minlength=len(names))

    grouped = np.argsort(file_corpus, kind="stable")
    corpus_first = np.searchsorted(file_corpus[grouped], np.arange(len(names)))
    corpus_epoch, short_slots = _corpus_epochs(file_corpus, file_weight, windows, len(names))
    corpus_period = np.maximum(np.minimum(corpus_epoch, corpus_samples), 1)
    full_periods = corpus_samples // corpus_period
    slots_full, slots_last = _file_slots(file_corpus, file_weight, windows, grouped, corpus_first, corpus_epoch,
                                         short_slots, corpus_period, corpus_samples, full_periods)
    base_full = np.cumsum(slots_full) - slots_full
    base_last = np.cumsum(slots_last) - slots_last
    plan = BlendPlan(
        file_list, seq_len, num_samples, seed, split, valid_fraction,
        begin, end, np.maximum(windows, 1), slack, file_corpus,
        list(names), corpus_weights, owner, rank, counts, corpus_samples,
        corpus_period, full_periods, corpus_first, grouped, slots_full, slots_last, base_full, base_last,
    )  # fmt: skip
    plan.build_seconds = time.perf_counter() - started
    return plan


def _check_plan_arguments(file_list: FileList, seq_len: int, num_samples: int, split: str,
                          valid_fraction: float) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
    if seq_len < 1 or num_samples < 1:
        raise DataError(f"seq_len ({seq_len}) and num_samples ({num_samples}) must be >= 1")
    if not (0.0 <= valid_fraction < 1.0) or (split == "valid" and valid_fraction == 0.0):
        raise DataError(
            f"valid_fraction {valid_fraction} does not give a {split} split",
            hint="use 0 <= valid_fraction < 1, and > 0 for the valid split",
        )
    if not file_list.entries:
        raise DataError(f"{file_list.path}: the data-file-list has no usable entries")


def _split_ranges(entries: list, split: str, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Each file's [begin, end) token range in `split`: its last documents are the valid split."""
    begin = np.zeros(len(entries), dtype=np.int64)
    end = np.array([e.num_tokens for e in entries], dtype=np.int64)
    if valid_fraction > 0:
        for f, e in enumerate(entries):
            point = _split_point(e, e.num_documents - held_out_documents(e.num_documents, valid_fraction))
            if split == "train":
                end[f] = point
            else:
                begin[f] = point
    return begin, end


def _weights(file_list: FileList, seq_len: int, split: str, begin: np.ndarray, end: np.ndarray, windows: np.ndarray,
             file_corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each file's weight in this split and each corpus's normalised share; a split a corpus cannot
    take part in is an error for training and leaves the corpus out of validation."""
    entries, names = file_list.entries, file_list.corpora
    file_weight = np.array([e.weight for e in entries], dtype=np.float64)
    if split == "train":
        # A file shorter than one sample repeats (as in megatron-core); only an empty one is unusable.
        empty_files = [e for f, e in enumerate(entries) if end[f] - begin[f] <= 0]
        if empty_files:
            raise DataError(
                f"{empty_files[0].source}: {empty_files[0].prefix} has no training tokens "
                f"({len(empty_files)} such file(s) in the list)",
                hint="drop such files from the list or lower valid_fraction",
            )
    else:  # a validation sample is never a file repeated: such files sit out the valid split
        file_weight = np.where(windows > 0, file_weight, 0.0)
    corpus_weights = np.zeros(len(names))
    np.add.at(corpus_weights, file_corpus, file_weight)
    # A corpus too small for one validation sample is left out of the valid split (its share
    # goes to the others); training needs every corpus.
    empty = [name for c, name in enumerate(names) if corpus_weights[c] <= 0]
    if empty and (split == "train" or len(empty) == len(names)):
        raise DataError(
            f"corpus {empty[0]!r} has no sample of {seq_len + 1} tokens in its {split} split",
            hint="give it more data, lower the sequence length, or change valid_fraction",
        )
    corpus_weights /= corpus_weights.sum()
    return file_weight, corpus_weights


def _file_slots(file_corpus: np.ndarray, file_weight: np.ndarray, windows: np.ndarray, grouped: np.ndarray,
                corpus_first: np.ndarray, corpus_epoch: np.ndarray, short_slots: np.ndarray, corpus_period: np.ndarray,
                corpus_samples: np.ndarray, full_periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples each file gives per corpus period (in corpus-grouped order), and in the last, partial one."""
    n_files = len(file_corpus)
    slots_full = np.zeros(n_files, dtype=np.int64)
    slots_last = np.zeros(n_files, dtype=np.int64)
    for c in range(len(corpus_first)):
        members = grouped[file_corpus[grouped] == c]
        w = file_weight[members]
        slots = apportion(w, int(corpus_period[c]))
        if corpus_period[c] == corpus_epoch[c] and windows[members].any():
            # Weights proportional to size (the usual list, and always the TOML/YAML form): give
            # each file exactly its windows, so every period is one whole epoch of every file
            # (files shorter than a sample get their weight's share of the extra slots).
            fit = np.where((windows[members] > 0) & (w > 0), windows[members], 0)
            short = np.flatnonzero((windows[members] == 0) & (w > 0))
            if short.size:
                fit[short] = apportion(w[short], int(short_slots[c]))
            if (np.abs(slots - fit) <= 1 + fit // 1000).all():
                slots = fit
        slots_full[corpus_first[c] : corpus_first[c] + len(members)] = slots
        rest_c = int(corpus_samples[c] - full_periods[c] * corpus_period[c])
        if rest_c:
            slots_last[corpus_first[c] : corpus_first[c] + len(members)] = apportion(w, rest_c)
    return slots_full, slots_last
