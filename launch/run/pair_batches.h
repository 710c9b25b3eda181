// pair_batches.h: the pair loader's batches (engine/data/pair_loader.h) as a sequence-to-
// sequence kind's graph inputs. Graphs have fixed shapes, so each batch is padded on to its
// graph's (S, T): the nearest of train.length_buckets lengths each side in training
// (bucket_lengths), model.src_len and model.seq_len in evaluation: source PAD (masked by source_len),
// decoder input PAD (causal: no real position reads it), target kIgnoreTarget (no loss, no
// gradient). The loss is then made the mean over the real target tokens (loss_scale). A graph
// without a source input (a decoder-only pair kind) gets each pair as one row of tokens,
// source then decoder input (model.h).
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/data/pair_loader.h"
#include "engine/graph/executor.h"
#include "models/model.h"

namespace loom {

// UserError naming the split when one of its pairs (EOS added) is longer than the model reads.
void check_pair_lengths(const PairSplit& split, const ModelConfig& model);

// The target positions of a pair graph: T, or T - S when the graph reads one sequence.
inline int graph_target_len(const ModelGraph& mg) { return mg.source < 0 ? mg.T - mg.S : mg.T; }

// The lengths a side of at most L positions is padded to with k buckets: ceil(L j / k) for
// j = 1..k, repeats dropped, ascending (the last is L).
std::vector<int> bucket_lengths(int L, int k);
// The shortest of `lengths` (ascending) that holds n; n must fit the last.
int bucket_for(const std::vector<int>& lengths, int n);

// How many of a split's first pairs `max_pairs` asks for (0: all of them).
inline int64_t first_pairs(const PairSplit& split, int64_t max_pairs) {
  const auto n = static_cast<int64_t>(split.size());
  return max_pairs > 0 ? std::min(max_pairs, n) : n;
}
// Pair i of a split as the model reads it: source and target, each with its EOS.
struct SplitPair {
  std::vector<int32_t> source, target;
};
// Pairs [first, first + n) of `split`.
std::vector<SplitPair> read_split_pairs(const PairSplit& split, const PairVocab& v, uint64_t first, uint64_t n);
// Rows [first, first + B) of `pairs` as one full-size batch of `mg` (S = src_len, T = seq_len):
// evaluation's batches, in order. Rows past the end repeat pair `first` with no target tokens
// (no loss), so every batch has the graph's B rows.
void split_batch(const std::vector<SplitPair>& pairs, size_t first, const ModelGraph& mg, const PairVocab& v,
                 PairBatch& b);

// One rank's micro-batch as graph inputs.
struct PairInputs {
  std::vector<int32_t> source, source_len, tokens, targets;
  std::vector<int32_t> target_start;  // per row: the graph position of its first target token
  int64_t target_tokens = 0;  // real target tokens (EOS included)
  int64_t real_tokens = 0;    // real tokens, source and target (what tokens per second count)
  int64_t all_tokens = 0;     // B x (S + T): real and padding
};
void fill_pair_inputs(const PairBatch& b, const ModelGraph& mg, uint32_t pad, PairInputs& out);
void set_pair_inputs(Executor& ex, const ModelGraph& mg, const PairInputs& in);

// A pair loader for a run of `world` ranks, `rows` pairs per rank per micro-batch.
std::unique_ptr<PairLoader> make_pair_loader(const PairSplit& split, const PairVocab& vocab, int rows, int world,
                                             uint64_t seed);

// Validation on pairs: the mean loss over the real target tokens of `batches` batches of the
// split (the same ones every time: a loader seeded afresh), over all ranks.
double eval_pairs(Executor& ex, const ModelGraph& mg, const PairSplit& split, const PairVocab& vocab, uint64_t seed,
                  int batches, Comm& comm);

}  // namespace loom
