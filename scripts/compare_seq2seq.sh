#!/usr/bin/env bash
# compare_seq2seq.sh: the sequence-to-sequence comparison of docs/models.md. Trains the
# encoder-decoder Transformer (encdec), the recurrent encoder-decoder with attention
# (rnn-seq2seq) and the decoder-only GPT reading "source EOS BOS target" (gpt-pairs) on the same
# pairs -- T5's span corruption of the KJV's short verses (at most 80 bytes: 5,876 of the
# 31,102; sources of at most 72 bytes and targets of 16, so that three small models train in
# minutes on two CPU cores, where whole verses of up to 475 bytes take most of an hour for
# one) -- at about the same parameter count and the same budget of pairs
# (train.steps x batch_size), evaluates each on the same val pairs with `loom eval` (target
# loss, exact match and BLEU/chrF of greedy decodes, the exposure gap), times each one's
# training step with `loom bench train` (back to back at the end: one load for all three),
# prints the parameter counts and the markdown table, and draws the three runs' loss curves
# (`loom plot`) into the picture of docs/models.md.
#
#   scripts/compare_seq2seq.sh [OUT_DIR]    (default runs/compare-seq2seq; DEVICE=cpu|cuda|auto,
#                                            default cpu; LOOM=the loom binary, default
#                                            build/loom; PLOT=the picture, default
#                                            docs/img/compare_seq2seq.png; STEPS=N: train.steps
#                                            of every run, default 300; KINDS="encdec ...": the
#                                            kinds to run, default all three;
#                                            EVAL_PAIRS=N: the val pairs each model decodes,
#                                            default 300)
#
# Runs that already finished are not retrained (their run folders are reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/compare-seq2seq}
device=${DEVICE:-cpu}
loom=${LOOM:-build/loom}
steps=${STEPS:-300}
kinds=${KINDS:-encdec rnn-seq2seq gpt-pairs}
eval_pairs=${EVAL_PAIRS:-300}  # val pairs decoded greedily by each model
[[ -x "$loom" ]] || scripts/build.sh
[[ -f data/kjv.txt ]] || "$loom" prepare --corpus kjv --out data/kjv
mkdir -p "$out"

# The pairs: span corruption of the verses of at most 80 bytes.
pairs=$out/pairs
if [[ ! -f $pairs/meta.json ]]; then
  awk 'length($0) <= 80' data/kjv.txt >"$out/short_verses.txt"
  "$loom" prepare --corpus "$out/short_verses.txt" --task span-corruption --out "$pairs" | tee "$out/prepare.log"
fi
# S and T: the longest source and target, with their EOS.
S=$(($(sed -n 's/.*(at most \([0-9]*\)), target.*/\1/p' "$out/prepare.log") + 1))
T=$(($(sed -n 's/.*target [0-9.]* (at most \([0-9]*\)).*/\1/p' "$out/prepare.log") + 1))

# Each kind's [model]: widths chosen so the three parameter counts agree within ~5%.
model_keys() {
  case $1 in
    encdec) printf 'n_enc_layer = 2\nn_dec_layer = 2\nn_head = 4\nd_model = 64\npositions = "learned"\n' ;;
    rnn-seq2seq) printf 'n_enc_layer = 2\nn_dec_layer = 2\nd_model = 80\n' ;;
    gpt-pairs) printf 'n_layer = 4\nn_head = 4\nd_model = 68\n' ;;
  esac
}
bench_flags() {
  case $1 in
    encdec) echo --n-enc-layer 2 --n-dec-layer 2 --n-head 4 --d-model 64 ;;
    rnn-seq2seq) echo --n-enc-layer 2 --n-dec-layer 2 --d-model 80 ;;
    gpt-pairs) echo --n-layer 4 --n-head 4 --d-model 68 ;;
  esac
}
config() {
  cat <<EOF
device = "$device"
[model]
kind = "$1"
$(model_keys "$1")
src_len = $S
seq_len = $T
[data]
path = "$pairs"
[train]
steps = $steps
batch_size = 32
seed = 1337
eval_every = 100
eval_steps = 8
[optim]
lr = 2e-3
min_lr = 2e-4
warmup_steps = 40
weight_decay = 0.1
beta2 = 0.95
grad_clip = 1.0
[checkpoint]
every = 100000
[log]
run_dir = "$out/$1"
every = 10
EOF
}

rows=$out/rows.tmp
rm -f "$rows"
for kind in $kinds; do
  dir=$out/$kind
  config "$kind" >"$out/$kind.toml"
  if [[ ! -e $dir/latest ]] || ! grep -q '^done:' "$dir/train.log" 2>/dev/null; then
    rm -rf "$dir"
    echo "=== $kind ==="
    "$loom" train --config "$out/$kind.toml" | tee "$dir.log.tmp"
    mv "$dir.log.tmp" "$dir/train.log"
  fi
  "$loom" eval --checkpoint "$dir" --device "$device" --max-pairs "$eval_pairs" --json "$dir/eval.json" | tee "$dir/eval.txt"
  params=$(sed -n 's/.* | \([0-9]*\) parameters$/\1/p' "$dir/train.log" | head -1)
  echo "$kind|$params" >>"$rows"
done

plot=${PLOT:-docs/img/compare_seq2seq.png}
mkdir -p "$(dirname "$plot")"
# shellcheck disable=SC2046
"$loom" plot $(for k in $kinds; do echo "$out/$k"; done) --x tokens --out "$plot" --width 900 --height 560

declare -A tok
for kind in $kinds; do
  tok[$kind]=$("$loom" bench train --device "$device" --model "$kind" $(bench_flags "$kind") --src-len "$S" \
    --seq-len "$T" --vocab "$(sed -n 's/.*vocabulary \([0-9]*\).*/\1/p' "$out/prepare.log")" --batch 32 --steps 5 \
    --warmup 2 | sed -n 's/.* | \([0-9]*\) tokens\/s | .*/\1/p')
done

table=$out/table.md
{
  echo "| model | parameters | val loss (nats/target token) | exact match | BLEU | chrF | exposure gap | train target tokens/s ($device) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$table"
first=$(head -1 "$rows" | cut -d'|' -f2)
echo "parameters (against ${kinds%% *}):"
while IFS='|' read -r kind params; do
  read -r loss em bleu chrf gap < <(python3 -c 'import json, sys; j = json.load(open(sys.argv[1]))
print("%.4f %.1f%% %.1f %.1f %.3f" % (j["loss"], 100 * j["exact_match"], j["bleu"], j["chrf"], j["exposure_gap"]))' \
    "$out/$kind/eval.json")
  awk -v k="$kind" -v p="$params" -v f="$first" 'BEGIN {printf "  %-12s %9d  %+.1f%%\n", k, p, 100 * (p - f) / f}'
  echo "| $kind | $params | $loss | $em | $bleu | $chrf | $gap | ${tok[$kind]} |" >>"$table"
done <"$rows"
rm -f "$rows"
echo
cat "$table"
