"""Benchmark the blend plan against megatron-core's BlendedMegatronDatasetBuilder on the same files.

Synthetic corpora: real `.idx` files with log-normal document lengths (mean ~1,300 tokens) and
sparse `.bin` files made with truncate (no token is written), so 2T tokens cost ~30 GB of index
and no data. Each builder runs in its own subprocess so peak RSS is its own.

    python bench/blend.py --tokens 2e12 --files 2419            # the issue's headline target
    python bench/blend.py --tokens 2e11 --files 1000 --megatron  # against megatron-core
    python bench/blend.py --tokens 2e9 --files 50 --megatron     # a small run (CI size)

Generated data is kept under --out for reuse (a manifest records its parameters) unless --clean.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAGIC = b"MMIDIDX\x00\x00"
UINT16_CODE = 8
CORPUS_NAMES = ("web", "code", "books", "papers", "wiki", "math", "forums", "news", "legal", "stack")


def generate(out: Path, tokens: float, files: int, corpora: int, seed: int) -> Path:
    """Write `files` synthetic datasets totalling ~`tokens` tokens and a Dolma-like file list."""
    manifest = out / "manifest.json"
    params = {"tokens": tokens, "files": files, "corpora": corpora, "seed": seed, "version": 1}
    list_path = out / "list.txt"
    if manifest.exists() and json.loads(manifest.read_text()) == params and list_path.exists():
        return list_path
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    need = tokens / 1300 * 20 * 1.1
    free = shutil.disk_usage(out).free
    if need > free:
        raise SystemExit(f"need ~{need / 1e9:.1f} GB of index files, only {free / 1e9:.1f} GB free under {out}")
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 0.6, files)
    sizes = np.maximum((sizes / sizes.sum() * tokens).astype(np.int64), 10_000)
    lines = []
    started = time.perf_counter()
    for f, size in enumerate(sizes.tolist()):
        corpus = CORPUS_NAMES[f % corpora] if corpora <= len(CORPUS_NAMES) else f"corpus{f % corpora}"
        prefix = out / corpus / f"part_{f:05d}"
        prefix.parent.mkdir(exist_ok=True)
        lengths = _document_lengths(rng, size)
        _write_index(prefix, lengths)
        with open(str(prefix) + ".bin", "wb") as handle:
            handle.truncate(int(lengths.sum()) * 2)
        lines.append(f"{int(lengths.sum())} {prefix} {corpus}")
        if f % 100 == 99:
            print(f"  generated {f + 1}/{files} files ({time.perf_counter() - started:.0f} s)", flush=True)
    list_path.write_text("\n".join(lines) + "\n")
    manifest.write_text(json.dumps(params))
    return list_path


def _document_lengths(rng: np.random.Generator, target: int) -> np.ndarray:
    parts, total = [], 0
    while total < target:
        n = max(int((target - total) / 1300 * 1.05), 16)
        lengths = np.clip(rng.lognormal(6.6, 1.1, n), 8, 200_000).astype(np.int32)
        parts.append(lengths)
        total += int(lengths.sum(dtype=np.int64))
    lengths = np.concatenate(parts)
    cum = np.cumsum(lengths, dtype=np.int64)
    keep = int(np.searchsorted(cum, target)) + 1
    return lengths[:keep]


def _write_index(prefix: Path, lengths: np.ndarray) -> None:
    n = len(lengths)
    pointers = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
    pointers *= 2
    with open(str(prefix) + ".idx", "wb") as handle:
        handle.write(MAGIC + struct.pack("<Q", 1) + struct.pack("<B", UINT16_CODE) + struct.pack("<QQ", n, n + 1))
        handle.write(lengths.astype(np.int32).tobytes())
        handle.write(pointers.tobytes())
        handle.write(np.arange(n + 1, dtype=np.int64).tobytes())


OURS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from auroragpt.data.blend import build_blend_plan
from auroragpt.data.filelist import parse_file_list
t1 = time.perf_counter()
list_path, seq_len, num_samples, lookups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
plan = build_blend_plan(parse_file_list(list_path), seq_len, num_samples, seed=1234)
t2 = time.perf_counter()
build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
idx = np.random.default_rng(0).integers(0, num_samples, lookups)
t3 = time.perf_counter()
for chunk in np.array_split(idx, max(1, lookups // 65536)):
    plan.locate_batch(chunk)
t4 = time.perf_counter()
few = idx[:10000]
t5 = time.perf_counter()
plan.spans_batch(few)
t6 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "build_peak_rss": build_rss,
                  "lookups_per_s": lookups / (t4 - t3), "spans_per_s": len(few) / (t6 - t5),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "mix": {s.name: [s.weight, s.samples / num_samples, s.epochs] for s in plan.summary()}}))
"""

MEGATRON = r"""
import json, logging, resource, sys, time, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
t0 = time.perf_counter()
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
t1 = time.perf_counter()
list_path, seq_len, num_samples, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import os, torch.distributed as dist
os.makedirs(cache, exist_ok=True)
dist.init_process_group("gloo", init_method=f"file://{cache}/pg", rank=0, world_size=1)  # its cache path needs one

class Tokenizer:  # the builder needs only these attributes
    vocab_size, eod, pad, eos = 50304, 0, -1, 0
    special_tokens_dict = {}
    unique_identifiers = {"class": "BenchTokenizer"}

weights, prefixes = [], []
for line in open(list_path):
    w, p, _ = line.split()
    weights.append(float(w)); prefixes.append(p)
config = GPTDatasetConfig(random_seed=1234, sequence_length=seq_len, blend=(prefixes, weights), split="100,0,0",
                          tokenizer=Tokenizer(), reset_position_ids=False, reset_attention_mask=False,
                          eod_mask_loss=False, path_to_cache=cache, mmap_bin_files=True)
t2 = time.perf_counter()
train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [num_samples, 0, 0], lambda: True, config).build()
t3 = time.perf_counter()
assert len(train) >= num_samples
print(json.dumps({"import_s": t1 - t0, "build_s": t3 - t2, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _run(code: str, args: list[str], timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent / "src"))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=2e9, help="total tokens over all files")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--corpora", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "auroragpt_blend_bench")
    parser.add_argument("--megatron", action="store_true", help="also build megatron-core's blend on the same files")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--clean", action="store_true", help="delete the generated data afterwards")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache before each build")
    args = parser.parse_args(argv)

    out = args.out / f"{args.tokens:.0e}_{args.files}"
    print(f"synthetic corpora: {args.tokens:.3g} tokens over {args.files} files in {out}")
    list_path = generate(out, args.tokens, args.files, args.corpora, args.seed)
    num_samples = int(args.tokens) // args.seq_len
    cold = not args.warm and _drop_page_cache()
    ours = _run(OURS, [str(list_path), str(args.seq_len), str(num_samples), str(args.lookups)], args.timeout)
    print(f"auroragpt: plan of {num_samples:,} samples (S={args.seq_len}) built in {ours['build_s']:.3f} s "
          f"({'cold page cache' if cold else 'page cache not dropped'}; +{ours['import_s']:.2f} s imports), "
          f"peak RSS {ours['build_peak_rss'] / 2**20:.0f} MiB")
    print(f"auroragpt: {ours['lookups_per_s']:,.0f} sample look-ups/s (sample -> file, token offset); "
          f"{ours['spans_per_s']:,.0f} samples/s resolved to document spans")
    for name, (weight, achieved, epochs) in ours["mix"].items():
        print(f"  {name:10s} weight {weight:.6f} achieved {achieved:.6f} epochs {epochs:.3f}")
    if args.megatron:
        cache = out / "megatron_cache"
        shutil.rmtree(cache, ignore_errors=True)
        if not args.warm:
            _drop_page_cache()
        theirs = _run(MEGATRON, [str(list_path), str(args.seq_len), str(num_samples), str(cache)], args.timeout)
        shutil.rmtree(cache, ignore_errors=True)
        print(f"megatron-core: built in {theirs['build_s']:.2f} s, peak RSS {theirs['peak_rss'] / 2**20:.0f} MiB")
        print(f"ratio: auroragpt is {theirs['build_s'] / ours['build_s']:.0f}x faster, "
              f"{theirs['peak_rss'] / ours['build_peak_rss']:.1f}x less memory")
    if args.clean:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
