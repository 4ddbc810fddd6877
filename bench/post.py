"""Post-training benchmarks, as ratios measured in one run on this machine (CPU by default).

1. DPO step throughput against TRL's DPOTrainer: the same GPT (exported to Hugging Face for TRL),
   the same batch of pairs, a live frozen reference on both sides; one step = policy + reference
   forwards, backward, AdamW step. Ratio = ours / TRL pairs per second (target >= 1.0).
2. Peak memory (max RSS of a fresh `auroragpt train` process) of DPO with a precomputed reference
   against SFT on the same model, rows per step and sequence length (target <= 1.1), and of DPO
   with a live reference (reported).

    python bench/post.py                       # defaults: dim 256, 4 layers, 8 pairs x 128 tokens
    python bench/post.py --dim 512 --layers 8 --steps 10
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

WORDS = "alpha beta gamma delta epsilon zeta theta lambda sigma omega".split()


def _model(vocab: int, args, seed: int):
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    cfg = get_preset("tiny", vocab_size=vocab, dim=args.dim, n_layers=args.layers, n_heads=args.dim // 32,
                     n_kv_heads=args.dim // 32, ffn_dim=3 * args.dim, max_seq_len=args.seq_len + 1)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def _batch(pairs: int, width: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (2 * pairs, width), generator=g)
    mask = torch.zeros(2 * pairs, width, dtype=torch.bool)
    mask[:, width // 2:] = True  # the second half is the response
    rows = torch.where(mask, tokens, -tokens - 1)
    return torch.cat([rows, torch.arange(pairs).repeat_interleave(2)[:, None]], dim=1)


def bench_throughput(args, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    from auroragpt.data.tokenizer import train_bpe
    from auroragpt.export.hf import export_hf
    from auroragpt.parallel.layout import ParallelLayout, validate
    from auroragpt.parallel.parallelize import parallelize
    from auroragpt.train.dpo import DPOObjective
    from auroragpt.train.reference import LiveReference

    tok = train_bpe([" ".join(WORDS)] * 50, 300, work / "tok.json")
    vocab = tok.vocab_size
    policy, reference = _model(vocab, args, 1), _model(vocab, args, 0)
    export_hf(policy.eval(), work / "policy", overwrite=True)
    export_hf(reference.eval(), work / "reference", overwrite=True)
    rows = _batch(args.pairs, args.seq_len + 1, vocab)

    reference.requires_grad_(False)
    runner = parallelize(policy.train(), validate(ParallelLayout(), 1, policy.cfg, args.pairs, args.pairs), None, device="cpu")
    objective = DPOObjective(runner.layout, LiveReference(reference.eval()), beta=0.1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)

    def ours() -> None:
        tokens, targets, loss_fn = objective.batch(iter([rows]), 1)
        runner.train_step(tokens, targets, loss_fn)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    load = lambda name: AutoModelForCausalLM.from_pretrained(work / name, dtype=torch.float32)  # noqa: E731
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok.path), eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = DPOConfig(output_dir=str(work / "trl"), beta=0.1, report_to=[], use_cpu=True, bf16=False, fp16=False,
                       per_device_train_batch_size=args.pairs)
    trainer = DPOTrainer(model=load("policy"), ref_model=load("reference"), args=config, processing_class=hf_tok,
                         train_dataset=Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}] * args.pairs))
    full = rows[:, :-1]
    order = torch.cat([torch.arange(0, 2 * args.pairs, 2), torch.arange(1, 2 * args.pairs, 2)])
    ids = torch.where(full >= 0, full, -full - 1)[order]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": (full >= 0).long()[order]}
    trl_optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-5)
    trainer.model.train()

    def theirs() -> None:
        trainer._compute_loss(trainer.model, inputs, False).backward()
        trl_optimizer.step()
        trl_optimizer.zero_grad(set_to_none=True)

    ours(), theirs()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "trl": []}
    for _ in range(args.steps):  # alternate, so a busy machine slows both alike; medians drop outliers
        for name, step in (("ours", ours), ("trl", theirs)):
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    ours_rate = args.pairs / float(np.median(times["ours"]))
    trl_rate = args.pairs / float(np.median(times["trl"]))
    return {"ours_pairs_per_s": ours_rate, "trl_pairs_per_s": trl_rate, "throughput_ratio": ours_rate / trl_rate}


def _write_data(work: Path) -> Path:
    from auroragpt.data.tokenize import tokenize_corpora
    from auroragpt.data.tokenizer import train_bpe

    rng = random.Random(0)
    tok = train_bpe([" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(100)], 300, work / "tok.json")
    chats, pairs = [], []
    for _ in range(64):
        prompt = " ".join(rng.choice(WORDS) for _ in range(40))
        answer = lambda: " ".join(rng.choice(WORDS) for _ in range(40))  # noqa: E731
        chats.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer()}]})
        pairs.append({"prompt": [{"role": "user", "content": prompt}], "chosen": answer(), "rejected": answer()})
    for name, records, fmt in (("chat", chats, "chat"), ("pref", pairs, "preference")):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        tokenize_corpora([work / f"{name}.jsonl"], work / name, tok.path, fmt=fmt, workers=1, progress=False)
        (work / f"{name}_list.txt").write_text(f"1.0 {work / name} {name}\n")
    return tok.path


def _peak_rss_mib(command: list[str]) -> float:
    """Max RSS of `command` run in a fresh wrapper process (so earlier children do not count)."""
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
               "assert done.returncode == 0, done.stderr[-2000:]\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def bench_memory(args, work: Path) -> dict:
    tokenizer = _write_data(work)
    exe = [sys.executable, "-m", "auroragpt.cli", "train", "--config", "/dev/null"]
    common = [f"--model.dim={args.dim}", f"--model.n_layers={args.layers}", f"--model.n_heads={args.dim // 32}",
              f"--model.n_kv_heads={args.dim // 32}", f"--model.ffn_dim={3 * args.dim}", f"--data.tokenizer={tokenizer}",
              f"--data.seq_len={args.seq_len}", "--train.steps=3", "--metrics.plots=false", "--train.spike_factor=1e9",
              "--checkpoint.save_at_end=true", "--optim.warmup_steps=1"]
    rows = 2 * args.pairs
    sft = common + [f"--data.file_list={work / 'chat_list.txt'}", "--train.objective=sft", f"--data.micro_batch={rows}",
                    f"--data.global_batch={rows}", f"--run.dir={work / 'sft'}"]
    peak_sft = _peak_rss_mib(exe + sft)
    init = work / "sft" / "checkpoints" / "step_00000003"
    dpo = common + [f"--data.file_list={work / 'pref_list.txt'}", "--train.objective=dpo", f"--data.micro_batch={args.pairs}",
                    f"--data.global_batch={args.pairs}", f"--checkpoint.init_from={init}", "--checkpoint.save_at_end=false"]
    peak_pre = _peak_rss_mib(exe + dpo + ["--post.reference=precomputed", f"--post.reference_cache={work / 'ref.npz'}",
                                          f"--run.dir={work / 'dpo_pre'}"])
    peak_live = _peak_rss_mib(exe + dpo + ["--post.reference=live", f"--run.dir={work / 'dpo_live'}"])
    return {"peak_rss_mib_sft": peak_sft, "peak_rss_mib_dpo_precomputed": peak_pre, "peak_rss_mib_dpo_live": peak_live,
            "memory_ratio_precomputed_vs_sft": peak_pre / peak_sft, "memory_ratio_live_vs_sft": peak_live / peak_sft}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true", help="only the throughput ratio")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_throughput(args, Path(tmp))
        if not args.skip_memory:
            results.update(bench_memory(args, Path(tmp) / "mem"))
    for key, value in results.items():
        print(f"{key:36s} {value:10.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
