#!/usr/bin/env bash
# The whole main job on one machine, from nothing to generated text, in a few minutes on 2 cores:
# demo corpora -> tokenizer -> indexed datasets -> data-file-list -> `tiny` trained on 2 ranks
# through `auroragpt launch` (with checkpoints) -> falling loss, plots -> text from the checkpoint.
# It starts with the 2-rank self-check (topology, all-reduce, DDP) so a broken runtime shows at once.
# Everything lands in $OUT (default demo_out/); nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-demo_out}
NPROCS=${NPROCS:-2}
STEPS=${STEPS:-}          # leave empty for configs/demo.toml's length
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x .venv/bin/auroragpt ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
started=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - started ))"; }

rm -rf "$OUT/run"
mkdir -p "$OUT/data"

say "1/7 self-check: topology, all-reduce and DDP on $NPROCS ranks"
auroragpt launch -n "$NPROCS" -- python -m auroragpt.runtime.selfcheck

say "2/7 demo corpora from the Python standard library"
auroragpt data demo-corpora "$OUT/corpora"

say "3/7 byte-level BPE tokenizer"
auroragpt data train-tokenizer "$OUT/corpora" --vocab-size 4096 --output "$OUT/tokenizer.json"

say "4/7 tokenize into indexed datasets (one per input file)"
auroragpt data tokenize "$OUT/corpora" --output-prefix "$OUT/data/demo" --tokenizer "$OUT/tokenizer.json" \
    --per-input --workers 2 --no-progress --force

say "5/7 data-file-list: 60% code, 40% prose"
cat > "$OUT/data/file_list.txt" <<LIST
# weight  prefix           corpus
0.35      demo_code_00     code
0.25      demo_code_01     code
0.25      demo_prose_00    prose
0.15      demo_prose_01    prose
LIST
cat "$OUT/data/file_list.txt"

say "6/7 train tiny on $NPROCS ranks (configs/demo.toml)"
overrides=(--data.file_list="$OUT/data/file_list.txt" --data.tokenizer="$OUT/tokenizer.json" --run.dir="$OUT/run")
if [ -n "$STEPS" ]; then overrides+=(--train.steps="$STEPS" --checkpoint.every=$(( (STEPS + 2) / 3 ))); fi
auroragpt launch -n "$NPROCS" -- auroragpt train --config configs/demo.toml "${overrides[@]}"
echo
echo "loss falling:"
python - "$OUT/run" <<'PY'
import sys
from auroragpt.train.plots import load_history
history = load_history(sys.argv[1])
shown = history[:: max(1, len(history) // 12)]
if shown[-1] is not history[-1]:
    shown.append(history[-1])
for r in shown:
    print(f"  step {r['step']:>5}  loss {r['loss']:.3f}  " + "#" * round(6 * r["loss"]))
PY
cat "$OUT/run/summary.txt"
echo "plots: $OUT/run/loss.png $OUT/run/throughput.png"

say "7/7 generate from the final checkpoint"
python - "$OUT/run" <<'PY'
import sys
from auroragpt.data.tokenizer import load_tokenizer
from auroragpt.model.generate import generate
from auroragpt.model.loading import load_inference_model
model, meta = load_inference_model(sys.argv[1])
tokenizer = load_tokenizer(meta["tokenizer"])
prompts = ["def ", "import os\n", "The "]
outputs = generate(model, [tokenizer.encode(p) for p in prompts], max_new_tokens=48, temperature=0.8, top_k=40,
                   stop_ids=[tokenizer.eod_id], seed=0)
print(f"checkpoint {meta['checkpoint']} (step {meta['step']}, {meta['tokens_seen']:,} tokens)")
for prompt, ids in zip(prompts, outputs):
    print("-" * 60)
    print(prompt + tokenizer.decode(ids))
PY

say "post 1/2 supervised fine-tuning on chats built locally (configs/sft-demo.toml)"
auroragpt post demo-data "$OUT/post" --examples 256 --pairs 256
auroragpt data tokenize "$OUT/post/sft.jsonl" --format chat --output-prefix "$OUT/post/sft" \
    --tokenizer "$OUT/tokenizer.json" --workers 2 --no-progress --force
auroragpt data tokenize "$OUT/post/dpo.jsonl" --format preference --output-prefix "$OUT/post/dpo" \
    --tokenizer "$OUT/tokenizer.json" --workers 2 --no-progress --force
echo "1.0 sft sft" > "$OUT/post/sft_list.txt"
echo "1.0 dpo dpo" > "$OUT/post/dpo_list.txt"
rm -rf "$OUT/sft" "$OUT/dpo"
pretrained=$(ls -d "$OUT"/run/checkpoints/step_* | tail -1)
auroragpt launch -n "$NPROCS" -- auroragpt train --config configs/sft-demo.toml --data.file_list="$OUT/post/sft_list.txt" \
    --data.tokenizer="$OUT/tokenizer.json" --checkpoint.init_from="$pretrained" --run.dir="$OUT/sft"

say "post 2/2 DPO from the SFT result, pairs whose chosen sum is right (configs/dpo-demo.toml)"
finetuned=$(ls -d "$OUT"/sft/checkpoints/step_* | tail -1)
auroragpt launch -n "$NPROCS" -- auroragpt train --config configs/dpo-demo.toml --data.file_list="$OUT/post/dpo_list.txt" \
    --data.tokenizer="$OUT/tokenizer.json" --checkpoint.init_from="$finetuned" --run.dir="$OUT/dpo"
echo
echo "reward accuracy rising (chosen = the right sum):"
python - "$OUT/dpo" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
for k in range(0, len(rows), 5):  # means over 5 steps: one step's 32 pairs are a noisy sample
    window = rows[k:k + 5]
    mean = lambda key: sum(r[key] for r in window) / len(window)  # noqa: E731
    print(f"  steps {window[0]['step']:>3}-{window[-1]['step']:<3} loss {mean('loss'):.3f}  reward accuracy "
          f"{mean('reward_accuracy'):.2f}  margin {mean('reward_margin'):+.3f}  " + "#" * round(30 * mean("reward_accuracy")))
PY

say "done"
