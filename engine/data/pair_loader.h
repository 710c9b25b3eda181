// pair_loader.h: batches of sequence pairs for encoder-decoder models, bucketed by length so
// that padding stays small.
//
// An epoch is planned from the seed and the epoch number alone: the pairs are shuffled, cut
// into windows of bucket_window pairs, each window is sorted by length (source + target, then
// source), and batches are cut from the sorted run, either batch_size pairs each or as many as
// fit batch_tokens padded tokens; then the batches themselves are shuffled, so that lengths do
// not rise through the epoch. Pairs left over at the end of a window (too few for a batch) join
// the next window. What cannot fill a last batch (n mod batch_size pairs, or n mod world with
// a token budget) is dropped from the end of the shuffled order before sorting, so it is a
// random few each epoch, never the longest pairs every time. Because the plan depends only on
// (seed, epoch), the position {epoch, batch} is the whole state: a resumed run continues with
// the same bits.
//
// Every row gets EOS after its tokens: source = tokens + EOS, target = tokens + EOS, and the
// decoder's teacher-forcing input is BOS + target[:-1]; then PAD up to the batch's longest
// row. Data parallelism: every rank plans the same global batches and keeps rows
// [rank * R, (rank + 1) * R), R = rows / world, padded to the global batch's lengths, so every
// rank has the same shapes and the union over ranks is the single-rank batch.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "engine/data/pairs.h"

namespace loom {

struct PairLoaderOptions {
  // Pairs in a global batch (a multiple of world). 0: batch_tokens decides.
  int batch_size = 32;
  // With batch_size 0: the most padded tokens, rows x (S + T), in a global batch (a batch
  // holds at least `world` rows even if one pair alone exceeds it; rows are a multiple of world).
  uint64_t batch_tokens = 0;
  // Pairs sorted together; 1: no bucketing (batches in shuffled order).
  uint64_t bucket_window = 2048;
  uint64_t seed = 1;
  int world = 1;
};

// One rank's rows of a batch, row-major, S and T the global batch's longest source and target
// (EOS included).
struct PairBatch {
  int rows = 0, S = 0, T = 0;
  std::vector<int32_t> source;         // rows x S: tokens, EOS, PAD...
  std::vector<int32_t> target;         // rows x T: tokens, EOS, PAD... (what the loss reads)
  std::vector<int32_t> decoder_input;  // rows x T: BOS, target[:-1] of the row, PAD...
  std::vector<int32_t> source_len, target_len;  // per row, EOS included
  std::vector<uint8_t> source_mask, target_mask;  // 1 on a row's tokens and EOS, 0 on PAD
  std::vector<uint64_t> pairs;         // the rows' pair numbers in the split
};

class PairLoader {
 public:
  // UserError (naming the split) if it holds fewer pairs than one batch.
  PairLoader(const PairSplit& split, const PairVocab& vocab, const PairLoaderOptions& options);
  void next_batch(int rank, PairBatch& out);
  uint64_t epoch() const { return epoch_; }
  uint64_t batches_in_epoch() const { return starts_.size() - 1; }
  // {epoch, batches served in it, 0, 0}: continues the exact same stream after a resume.
  std::array<uint64_t, 4> state() const { return {epoch_, batch_, 0, 0}; }
  void set_state(const std::array<uint64_t, 4>& s);
  // Padding tokens / all tokens (source and target sides, all ranks' rows) of the batches
  // served since construction, and of the whole plan of the current epoch.
  double padding_fraction() const;
  double epoch_padding_fraction() const;

 private:
  void plan(uint64_t epoch);
  // Rows [begin, end) of the plan as one batch: its (S, T).
  std::pair<uint32_t, uint32_t> shape(size_t begin, size_t end) const;
  const PairSplit& split_;
  PairVocab vocab_;
  PairLoaderOptions o_;
  std::vector<uint32_t> src_len_, tgt_len_;  // EOS included
  std::vector<uint64_t> order_;   // the epoch's pairs, batch after batch
  std::vector<size_t> starts_;    // batch k is order_[starts_[k] .. starts_[k+1])
  uint64_t epoch_ = 0, batch_ = 0;
  uint64_t served_real_ = 0, served_all_ = 0;
};

}  // namespace loom
