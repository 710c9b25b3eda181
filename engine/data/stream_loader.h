// stream_loader.h: consecutive windows for recurrent models (truncated backpropagation
// through time). The split is cut into `global_batch` contiguous streams of L tokens; batch k
// holds window k of every stream (row r: x = t[r*L + k*T : +T], y shifted by one), so a row's
// hidden state at the end of one batch is the right start for the same row of the next.
// After the last whole window of the streams, the epoch ends: the next batch starts again at
// window 0 and the caller resets the hidden state (next_batch says so).
// Data parallelism: rank r of `world` keeps rows [r * B, (r+1) * B), B = global_batch / world,
// so the union over ranks is the single-rank batch.
#pragma once
#include <array>
#include <cstdint>

#include "engine/data/shard.h"

namespace loom {

class StreamLoader {
 public:
  // UserError (naming the shard) if a stream would hold fewer than T + 1 tokens.
  StreamLoader(const Shard& shard, int seq_len, int global_batch);
  // Fills x and y with (global_batch / world) * T tokens each. Returns true when this batch is
  // window 0 of an epoch: the hidden state must be reset before it.
  bool next_batch(int rank, int world, int32_t* x, int32_t* y);
  int64_t windows_per_epoch() const { return windows_; }
  // The position (window, epoch), to continue the exact same stream after a resume.
  std::array<uint64_t, 4> state() const { return {static_cast<uint64_t>(window_), static_cast<uint64_t>(epoch_), 0, 0}; }
  void set_state(const std::array<uint64_t, 4>& s);

 private:
  const Shard& shard_;
  int T_, G_;
  uint64_t stream_len_;
  int64_t windows_;
  int64_t window_ = 0, epoch_ = 0;
};

}  // namespace loom
