// stream_loader.cpp: see stream_loader.h.
#include "engine/data/stream_loader.h"

#include <vector>

#include "core/check.h"

namespace loom {

StreamLoader::StreamLoader(const Shard& shard, int seq_len, int global_batch)
    : shard_(shard), T_(seq_len), G_(global_batch) {
  LOOM_CHECK(seq_len >= 1 && global_batch >= 1);
  stream_len_ = shard.size() / static_cast<uint64_t>(global_batch);
  LOOM_USER_CHECK(stream_len_ >= static_cast<uint64_t>(seq_len) + 1, shard.path(), ": ", shard.size(),
                  " tokens cannot feed ", global_batch, " streams of at least seq_len + 1 = ", seq_len + 1,
                  " tokens; lower train.batch_size or model.seq_len");
  windows_ = static_cast<int64_t>((stream_len_ - 1) / static_cast<uint64_t>(seq_len));
}

bool StreamLoader::next_batch(int rank, int world, int32_t* x, int32_t* y) {
  LOOM_CHECK(world >= 1 && G_ % world == 0 && rank >= 0 && rank < world);
  const bool fresh = window_ == 0;
  const int B = G_ / world;
  std::vector<uint32_t> window(static_cast<size_t>(T_) + 1);
  for (int b = 0; b < B; ++b) {
    const uint64_t row = static_cast<uint64_t>(rank) * B + b;
    const uint64_t start = row * stream_len_ + static_cast<uint64_t>(window_) * T_;
    shard_.read(start, window.size(), window.data());
    for (int t = 0; t < T_; ++t) {
      x[static_cast<size_t>(b) * T_ + t] = static_cast<int32_t>(window[t]);
      y[static_cast<size_t>(b) * T_ + t] = static_cast<int32_t>(window[t + 1]);
    }
  }
  if (++window_ == windows_) window_ = 0, ++epoch_;
  return fresh;
}

void StreamLoader::set_state(const std::array<uint64_t, 4>& s) {
  LOOM_USER_CHECK(s[0] < static_cast<uint64_t>(windows_), "checkpoint: stream position ", s[0], " beyond the ",
                  windows_, " windows of an epoch (data or batch size changed?)");
  window_ = static_cast<int64_t>(s[0]);
  epoch_ = static_cast<int64_t>(s[1]);
}

}  // namespace loom
