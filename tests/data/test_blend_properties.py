"""Sampling quality of the blend plan, as properties over small random corpora (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auroragpt.data.blend import apportion, build_blend_plan, chairman_schedule
from auroragpt.data.filelist import parse_file_list
from auroragpt.data.indexed import IndexedDataset, IndexedDatasetWriter
from auroragpt.data.permutation import derive_key, permute

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_corpora(root, spec, seed=0):
    """spec: list of (corpus, n_files); returns a list path. Token values encode (file, position)."""
    rng = np.random.default_rng(seed)
    lines = []
    for corpus, n_files in spec:
        for k in range(n_files):
            prefix = root / f"{corpus}_{k}"
            f = len(lines)
            with IndexedDatasetWriter(prefix, np.int32) as writer:
                pos = 0
                for _ in range(int(rng.integers(3, 30))):
                    n = int(rng.lognormal(3.5, 1.0)) + 1
                    writer.add_document(f * 1_000_000 + np.arange(pos, pos + n))
                    pos += n
            lines.append(f"{rng.uniform(0.05, 1.0):.4f} {prefix} {corpus}")
    path = root / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("blendprops")
    return parse_file_list(make_corpora(root, [("web", 4), ("code", 3), ("books", 1), ("math", 2)]))


def max_window_error(owner, weights, n):
    """max over windows [a, b) of |count_c - w_c (b - a)|, for every corpus c."""
    worst = 0.0
    steps = np.arange(n + 1)
    for c, w in enumerate(weights):
        e = np.concatenate([[0], np.cumsum(owner[:n] == c)]) - w * steps
        worst = max(worst, float(e.max() - e.min()))
    return worst


@SETTINGS
@given(weights=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=12), period=st.integers(1, 3000))
def test_chairman_schedule_keeps_every_window_within_two(weights, period):
    counts = apportion(np.array(weights), period, at_least_one=True)
    owner, rank = chairman_schedule(counts)
    assert np.bincount(owner, minlength=len(weights)).tolist() == counts.tolist()
    tiled = np.tile(owner, 3)  # the schedule repeats; windows may straddle periods
    assert max_window_error(tiled, counts / period, len(tiled)) <= 2.0
    for c in range(len(weights)):
        assert rank[owner == c].tolist() == list(range(counts[c]))


@SETTINGS
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**63))
def test_permutation_is_a_bijection(n, seed):
    out = permute(np.arange(n), n, derive_key(seed))
    assert np.array_equal(np.sort(out), np.arange(n))


@SETTINGS
@given(seq_len=st.integers(4, 96), num_samples=st.integers(1, 4000), seed=st.integers(0, 10**6))
def test_plan_mix_epochs_and_shuffle(corpora, seq_len, num_samples, seed):
    plan = build_blend_plan(corpora, seq_len, num_samples, seed, valid_fraction=0.0)
    idx = np.arange(num_samples)
    files, starts = plan.locate_batch(idx)
    # every sample lies inside its file with exactly S+1 tokens
    assert (starts >= plan.token_begin[files]).all() and (starts + seq_len + 1 <= plan.token_end[files]).all()
    # corpus mix: every window of the run (the whole run included) within 2 of weight x window,
    # against the requested weights themselves, not only their rounding to 1/period
    q = len(plan.schedule_owner)
    owner = plan.corpus_of_batch(idx)
    assert max_window_error(owner, plan.schedule_counts / q, num_samples) <= 2.0
    assert max_window_error(owner, plan.corpus_weights, num_samples) < 2.0
    for c in range(len(plan.corpus_names)):
        members = np.flatnonzero(plan.file_corpus == c)
        used = np.bincount(files[owner == c], minlength=len(plan.windows))[members]
        # files within a corpus in proportion to their weight (within one sample per period)
        w = np.array([corpora.entries[f].weight for f in members])
        expected = used.sum() * w / w.sum()
        periods = plan.corpus_full_periods[c] + 1
        assert np.abs(used - expected).max() <= periods + 1, (used, expected)
    # whole epochs: within a file, every window is used floor or ceil(uses / windows) times
    for f in np.unique(files):
        window = (starts[files == f] - plan.token_begin[f]) // seq_len
        counts = np.bincount(window, minlength=int(plan.windows[f]))
        uses = len(window)
        lo, hi = uses // plan.windows[f], -(-uses // plan.windows[f])
        assert counts.min() >= lo and counts.max() <= hi
        # documents do not reach the model in file order
        if plan.windows[f] >= 8 and uses >= plan.windows[f]:
            first_epoch = window[: plan.windows[f]]
            assert not (np.diff(first_epoch) > 0).all()


def test_size_weighted_corpora_repeat_in_whole_epochs_with_fresh_order(corpora, tmp_path):
    # the TOML form shares a corpus's weight by token counts: each corpus period is one epoch
    root = corpora.entries[0].prefix.rsplit("/", 1)[0]
    path = tmp_path / "mix.toml"
    path.write_text(f'[[corpus]]\nname = "web"\nweight = 3\nfiles = ["{root}/web_*.bin"]\n\n'
                    f'[[corpus]]\nname = "code"\nweight = 1\nfiles = ["{root}/code_*.bin"]\n')
    plan = build_blend_plan(parse_file_list(path), 8, 20000, seed=7, valid_fraction=0.0)
    files, starts = plan.locate_batch(np.arange(20000))
    owner = plan.corpus_of_batch(np.arange(20000))
    for c in range(2):
        members = np.flatnonzero(plan.file_corpus == c)
        epoch = int(plan.windows[members].sum())
        stream = list(zip(files[owner == c].tolist(), ((starts - plan.token_begin[files]) // 8)[owner == c].tolist()))
        assert len(stream) >= 2 * epoch
        all_windows = sorted((int(f), w) for f in members for w in range(int(plan.windows[f])))
        first, second = stream[:epoch], stream[epoch : 2 * epoch]
        assert sorted(first) == all_windows and sorted(second) == all_windows
        assert first != second


def test_spans_read_the_tokens_of_the_sample(corpora):
    plan = build_blend_plan(corpora, 50, 300, seed=3, valid_fraction=0.2)
    datasets = [IndexedDataset(e.prefix) for e in corpora.entries]
    for i in range(0, 300, 7):
        spans = plan.spans(i)
        tokens = np.concatenate([datasets[f].get(doc, off, n) for f, doc, off, n in spans])
        sample = plan.sample(i)
        assert sample.dtype == np.int64 and len(sample) == 51
        assert np.array_equal(tokens, sample)
        # token values encode their file and position: the sample is one contiguous piece of its file
        assert (sample // 1_000_000 == spans[0][0]).all() and (np.diff(sample) == 1).all()
    assert plan.samples_batch(np.arange(10)).shape == (10, 51)


def test_validation_split_shares_no_documents_with_training(corpora):
    def documents(split):
        plan = build_blend_plan(corpora, 16, 3000, seed=5, split=split, valid_fraction=0.25)
        _, f, d, _, _ = plan.spans_batch(np.arange(3000))
        return set(zip(f.tolist(), d.tolist()))

    train, valid = documents("train"), documents("valid")
    assert train and valid and not (train & valid)


def test_bad_arguments_are_clear(corpora):
    from auroragpt.errors import DataError

    with pytest.raises(DataError, match="has no sample of 1000001 tokens in its valid split"):
        build_blend_plan(corpora, 10**6, 10, split="valid", valid_fraction=0.5)
    with pytest.raises(DataError, match="valid split"):
        build_blend_plan(corpora, 8, 10, split="valid", valid_fraction=0.0)
    with pytest.raises(IndexError):
        build_blend_plan(corpora, 8, 10).sample(10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.tuples(st.sampled_from(["x", "y", "z"]), st.floats(0.1, 5.0),
                  st.lists(st.integers(1, 120), min_size=1, max_size=25)),
        min_size=1, max_size=5,
    ),
    seq_len=st.integers(2, 24),
    num_samples=st.integers(1, 1500),
)
def test_random_corpora(tmp_path_factory, files, seq_len, num_samples):
    root = tmp_path_factory.mktemp("random")
    lines = []
    for f, (corpus, weight, lengths) in enumerate(files):
        with IndexedDatasetWriter(root / f"d{f}", np.int32) as writer:
            pos = 0
            for n in lengths:
                writer.add_document(f * 1_000_000 + np.arange(pos, pos + n))
                pos += n
        lines.append(f"{weight} {root / f'd{f}'} {corpus}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    fl = parse_file_list(root / "list.txt")
    plan = build_blend_plan(fl, seq_len, num_samples, seed=num_samples, valid_fraction=0.0)
    idx = np.arange(num_samples)
    owner = plan.corpus_of_batch(idx)
    assert max_window_error(owner, plan.schedule_counts / len(plan.schedule_owner), num_samples) <= 2.0
    tokens = plan.samples_batch(idx)
    assert tokens.shape == (num_samples, seq_len + 1)
    file_of = tokens[:, 0] // 1_000_000
    assert [plan.corpus_names.index(fl.entries[f].corpus) for f in file_of] == owner.tolist()
    # each sample is a contiguous run of one file, from the corpus the schedule names; a file
    # shorter than a sample (megatron-core accepts it) is read repeated: consecutive modulo its length
    sizes = np.array([sum(lengths) for _, _, lengths in files])
    assert (tokens // 1_000_000 == file_of[:, None]).all()
    step = np.diff(tokens % 1_000_000, axis=1)
    long = sizes[file_of] > seq_len
    assert (step[long] == 1).all()
    assert ((step[~long] % sizes[file_of][~long, None]) == (1 % sizes[file_of][~long, None])).all()
    _, span_file, doc, offset, length = plan.spans_batch(idx[:50])
    assert length.sum() == min(50, num_samples) * (seq_len + 1)


def test_validation_split_keeps_multi_sequence_documents_whole(tmp_path):
    # Megatron may store one document as several sequences; the split must fall between documents
    prefix = tmp_path / "sentences"
    rng = np.random.default_rng(2)
    with IndexedDatasetWriter(prefix, np.int32) as writer:
        pos = 0
        for _ in range(30):
            parts = rng.integers(1, 40, int(rng.integers(1, 5)))
            writer.add_document(np.arange(pos, pos + parts.sum()), sequence_lengths=parts)
            pos += int(parts.sum())
    (tmp_path / "list.txt").write_text(f"1 {prefix} only\n")
    fl = parse_file_list(tmp_path / "list.txt")
    ds = IndexedDataset(prefix)
    assert fl.entries[0].num_documents == 30 and len(ds) > 30

    def documents(split):
        plan = build_blend_plan(fl, 12, 400, seed=1, split=split, valid_fraction=0.3)
        sample, _, doc, offset, length = plan.spans_batch(np.arange(400))
        # spans name documents (not sequences), offsets count from the document's first token,
        # and reading them gives the sample's tokens
        tokens = plan.samples_batch(np.arange(400))
        for i in (0, 57, 399):
            parts = [ds.read_tokens(int(ds.sequence_pointers[ds.document_indices[d]]) // 4 + o, n)
                     for d, o, n in zip(doc[sample == i], offset[sample == i], length[sample == i])]
            assert np.array_equal(np.concatenate(parts), tokens[i])
            assert len(set(doc[sample == i].tolist())) == (sample == i).sum()  # one span per document
        return set(doc.tolist())

    train, valid = documents("train"), documents("valid")
    assert train and valid and not (train & valid)
    assert max(train) < min(valid) and max(valid) == 29


def test_schedule_keeps_every_window_within_two_of_the_requested_weights():
    """The period is long enough that rounding the shares never costs a window its bound: every
    window of a run within 2 of weight x window, against the weights as written. (With the period
    equal to the run, one random mix in five had a window off by up to 2.3.)"""
    from auroragpt.data.blend import schedule_period

    rng = np.random.default_rng(0)
    for _ in range(120):
        w = rng.uniform(0.001, 1.0, int(rng.integers(2, 13)))
        w /= w.sum()
        num_samples = int(rng.integers(1, 4000))
        period = schedule_period(num_samples, len(w))
        owner, _ = chairman_schedule(apportion(w, period, at_least_one=True))
        run = np.tile(owner, -(-num_samples // period))[:num_samples]
        assert max_window_error(run, w, num_samples) < 2.0, (w, num_samples)


def test_windows_up_to_the_bound_hold_in_runs_longer_than_the_period():
    """A long run: every window of up to 2**20/(K-1) samples within 2 of weight x window, across
    period boundaries too (checked on two periods of the real 2**20 schedule for 11 corpora)."""
    from auroragpt.data.blend import MAX_SCHEDULE_PERIOD, schedule_period

    w = np.random.default_rng(5).uniform(0.01, 1.0, 11)
    w /= w.sum()
    period = schedule_period(10**9, len(w))
    assert period == MAX_SCHEDULE_PERIOD
    owner, _ = chairman_schedule(apportion(w, period, at_least_one=True))
    run = np.tile(owner, 2)
    longest = period // (len(w) - 1)
    steps = np.arange(len(run) + 1)
    for c in range(len(w)):
        e = np.concatenate([[0], np.cumsum(run == c)]) - w[c] * steps
        # max over windows [a, b) with b - a <= longest of |e[b] - e[a]|
        spread = float((sliding_max(e, longest + 1) + sliding_max(-e, longest + 1)).max())
        assert spread < 2.0, (c, spread)


def sliding_max(x, m):
    """max(x[i : i + m]) for every i (van Herk / Gil-Werman: block prefix and suffix maxima)."""
    n = len(x)
    blocks = -(-n // m)
    padded = np.full(blocks * m, -np.inf)
    padded[:n] = x
    rows = padded.reshape(blocks, m)
    prefix = np.maximum.accumulate(rows, axis=1).reshape(-1)
    suffix = np.maximum.accumulate(rows[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    i = np.arange(n - m + 1)
    return np.maximum(suffix[i], prefix[i + m - 1])


def test_runs_longer_than_one_schedule_period(corpora, monkeypatch):
    """Past the first period (2**20 samples in real runs; 512 here) samples keep their corpus
    mix across period boundaries, stay inside their files and keep whole epochs per file."""
    import auroragpt.data.blend as blend

    monkeypatch.setattr(blend, "MAX_SCHEDULE_PERIOD", 512)
    n, seq_len = 20_000, 16
    plan = build_blend_plan(corpora, seq_len, n, seed=3, valid_fraction=0.0)
    assert len(plan.schedule_owner) == 512
    idx = np.arange(n)
    files, starts = plan.locate_batch(idx)
    assert (starts >= plan.token_begin[files]).all() and (starts + seq_len + 1 <= plan.token_end[files]).all()
    owner = plan.corpus_of_batch(idx)
    assert max_window_error(owner, plan.schedule_counts / 512, n) <= 2.0
    assert np.bincount(owner, minlength=len(plan.corpus_names)).tolist() == plan.corpus_samples.tolist()
    for f in np.unique(files):
        window = (starts[files == f] - plan.token_begin[f]) // seq_len
        counts = np.bincount(window, minlength=int(plan.windows[f]))
        uses = len(window)
        assert counts.min() >= uses // plan.windows[f] and counts.max() <= -(-uses // plan.windows[f])
    # the same samples looked up in another order and in pieces give the same answer
    perm = np.random.default_rng(0).permutation(n)
    f2, s2 = plan.locate_batch(perm)
    assert np.array_equal(f2, files[perm]) and np.array_equal(s2, starts[perm])
