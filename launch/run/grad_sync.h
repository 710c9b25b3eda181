// grad_sync.h: the gradient sums of data parallelism (docs/distributed.md). Plain DP sums
// gradients in buckets: contiguous ranges of the flat gradient buffer cut at parameter
// boundaries, issued in backward order from the executor's node hook as soon as the last
// node writing a bucket has run (on NCCL the sums overlap the rest of backward). ZeRO-1
// reduce-scatters the whole buffer after backward instead. One rank: nothing to do.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/graph/graph.h"

namespace loom {

class GradSync {
 public:
  // grads: the flat gradient buffer (backend memory) of graph g; shard_counts: ZeRO-1's slices
  // (empty: plain DP).
  GradSync(const Graph& g, Comm& comm, float* grads, const std::vector<int64_t>& shard_counts);
  // Called before each micro-batch: buckets go out only during the last one's backward.
  void begin_micro_batch(bool last);
  // The executor's hook after node `index` has run.
  void after_node(size_t index);
  // After the last backward: the remaining buckets, then waits for all (or the reduce-scatter).
  void finish();
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;
    size_t ready = 0;  // node index
  };
  static std::vector<Bucket> plan(const Graph& g, int64_t cap);
  void issue(size_t upto);

  Comm& comm_;
  float* grads_;
  size_t n_nodes_;
  std::vector<int64_t> shard_counts_;
  bool bucketed_, armed_ = false;
  std::vector<Bucket> buckets_;
  size_t next_ = 0;
};

}  // namespace loom
