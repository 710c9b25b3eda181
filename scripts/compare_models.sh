#!/usr/bin/env bash
# compare_models.sh: the model comparison of docs/models.md. Trains every model kind (ngram,
# ffnn, rnn, gru, lstm, gpt) on the same corpus (KJV), tokenizer (bytes) and token budget
# (train.steps x batch_size x seq_len of the configs: 600 x 16 x 128 = 1.23M tokens; the
# n-gram model counts the whole train split), evaluates each checkpoint on the same validation
# windows (`loom eval`, 20 batches of 16 x 128), prints the markdown table and draws the six
# runs' loss curves (`loom plot`) into the picture of docs/models.md.
#
#   scripts/compare_models.sh [OUT_DIR]     (default runs/compare; DEVICE=cpu|cuda|auto, default cpu;
#                                            LOOM=path of the loom binary, default build/loom;
#                                            PLOT=the picture, default docs/img/compare_models.png;
#                                            STEPS=N: train.steps of every run, for a quick look
#                                            with a smaller budget than the table's)
#
# Runs that already finished are not retrained (their run folders are reused), so the script
# can be interrupted and started again. Takes about 30 minutes on two CPU cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/compare}
device=${DEVICE:-cpu}
loom=${LOOM:-build/loom}  # the binary (LOOM=path to use another build)
[[ -x "$loom" ]] || scripts/build.sh
[[ -f data/kjv/meta.json ]] || "$loom" prepare --corpus kjv --out data/kjv
mkdir -p "$out"
rm -f "$out/rows.tmp"

# Training speed of each kind's shape (batch 16 x 128 tokens), all measured by `loom bench
# train` back to back at the end, so the column compares like with like (one run, one load).
bench_flags() {
  case $1 in
    gpt) echo --model gpt --n-layer 4 --d-model 256 --n-head 4 ;;
    lstm | gru | rnn) echo --model "$1" --n-layer 2 --d-model 256 ;;
    ffnn) echo --model ffnn --n-layer 1 --d-model 64 --d-hidden 512 --context 8 ;;
  esac
}

table=$out/table.md
{
  echo "| model | config | parameters | val loss (nats/token) | val perplexity | bits/byte | train tokens/s ($device) | speed vs gpt |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
} >"$table"
for kind in ngram ffnn rnn gru lstm gpt; do
  cfg=configs/$kind.toml
  # The default job now runs 1000 steps (docs/performance.md, "The default job"); the comparison
  # keeps every neural kind at the same 600 steps of 16 x 128 tokens.
  budget=()
  [[ $kind == gpt ]] && cfg=configs/default.toml && budget=(--train.steps 600)
  dir=$out/$kind
  if [[ ! -e $dir/latest ]] || ! grep -q '^done:' "$dir/train.log" 2>/dev/null; then
    resume=()
    [[ -e $dir/latest ]] && resume=(--resume)
    echo "=== $kind ($cfg) ==="
    "$loom" train --config "$cfg" --device "$device" --log.run_dir "$dir" "${budget[@]}" ${STEPS:+--train.steps "$STEPS"} \
      "${resume[@]}" | tee "$dir.log.tmp"
    mv "$dir.log.tmp" "$dir/train.log"
  fi
  "$loom" eval --checkpoint "$dir" --device "$device" --batches 20 --batch-size 16 | tee "$dir/eval.txt"
  loss=$(sed -n 's/^val loss \([0-9.]*\) nats.*/\1/p' "$dir/eval.txt")
  ppl=$(sed -n 's/.*perplexity \([0-9.]*\).*/\1/p' "$dir/eval.txt")
  bits=$(awk -v l="$loss" 'BEGIN {printf "%.3f", l / log(2)}')
  params=$(sed -n 's/.* | \([0-9]*\) parameters$/\1/p' "$dir/train.log" | head -1)
  [[ $kind == ngram ]] && params="$(sed -n 's/.*counting \([0-9]*\) of [0-9]* train tokens.*/counts of \1 tokens/p' "$dir/train.log" | head -1)"
  echo "$kind|$cfg|${params:-?}|$loss|$ppl|$bits" >>"$out/rows.tmp"
done
# The picture: every kind's train and val loss against tokens (the budget they share).
plot=${PLOT:-docs/img/compare_models.png}
mkdir -p "$(dirname "$plot")"
"$loom" plot "$out"/{ngram,ffnn,rnn,gru,lstm,gpt} --x tokens --out "$plot" --width 900 --height 560

declare -A tok
for kind in gpt ffnn rnn gru lstm; do
  tok[$kind]=$("$loom" bench train --device "$device" $(bench_flags $kind) --vocab 256 --batch 16 --seq-len 128 \
    --steps 5 --warmup 2 | sed -n 's/.* | \([0-9]*\) tokens\/s | .*/\1/p')
done
# The n-gram model's "training" is counting: its rate is from its own run (metrics.jsonl).
tok[ngram]=$(grep -o '"tokens_per_s":[0-9.e+-]*' "$out/ngram/metrics.jsonl" | cut -d: -f2 | sort -g | awk '{a[NR]=$1} END {printf "%.0f", a[int((NR+1)/2)]}')
while IFS='|' read -r kind cfg params loss ppl bits; do
  ratio=$(awk -v a="${tok[$kind]}" -v b="${tok[gpt]}" 'BEGIN {printf "%.2fx", a / b}')
  [[ $kind == ngram ]] && ratio="(counting)"
  echo "| $kind | $cfg | $params | $loss | $ppl | $bits | ${tok[$kind]} | $ratio |" >>"$table"
done <"$out/rows.tmp"
rm -f "$out/rows.tmp"
echo
cat "$table"
