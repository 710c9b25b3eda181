// grad_sync.cpp: see grad_sync.h.
#include "launch/run/grad_sync.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/check.h"

namespace loom {

namespace {

// LOOM_BUCKET_MB (default 25): the size of a gradient bucket, in (0, 65536] MiB.
int64_t bucket_floats() {
  const char* v = std::getenv("LOOM_BUCKET_MB");
  double mb = 25.0;
  if (v && *v) {
    const char* end = v + std::strlen(v);
    const auto r = std::from_chars(v, end, mb);
    LOOM_USER_CHECK(r.ec == std::errc() && r.ptr == end && std::isfinite(mb) && mb > 0 && mb <= 65536,
                    "LOOM_BUCKET_MB: expected a size in MiB in (0, 65536], got '", v, "'");
  }
  return std::max<int64_t>(1, static_cast<int64_t>(mb * 1048576.0 / 4));
}

}  // namespace

GradSync::GradSync(const Graph& g, Comm& comm, float* grads, const std::vector<int64_t>& shard_counts)
    : comm_(comm), grads_(grads), n_nodes_(g.nodes.size()), shard_counts_(shard_counts),
      bucketed_(comm.world() > 1 && shard_counts.empty()) {
  if (comm.world() > 1) buckets_ = plan(g, bucket_floats());
}

// Buckets tile the trainable prefix from its end (the last layers, whose gradients backward
// finishes first) towards the start, each at least `cap` floats; a bucket is ready after the
// last backward node that writes a gradient inside it. Issue order is by readiness, the same
// on every rank (the graphs are identical).
std::vector<GradSync::Bucket> GradSync::plan(const Graph& g, int64_t cap) {
  std::vector<const ParamInfo*> ps;
  for (const auto& p : g.params)
    if (p.trainable) ps.push_back(&p);  // frozen weights have no gradients to reduce
  std::sort(ps.begin(), ps.end(), [](const ParamInfo* a, const ParamInfo* b) { return a->offset > b->offset; });
  std::vector<size_t> last_write(g.values.size(), 0);
  for (size_t i = g.forward_end; i < g.nodes.size(); ++i)
    for (int o : g.nodes[i].out)
      if (o >= 0) last_write[static_cast<size_t>(o)] = i;
  std::vector<Bucket> buckets;
  int64_t end = g.trainable_prefix();
  size_t ready = 0;
  bool any = false;
  for (size_t k = 0; k < ps.size(); ++k) {
    const ParamInfo& p = *ps[k];
    if (p.grad_value >= 0) ready = std::max(ready, last_write[static_cast<size_t>(p.grad_value)]), any = true;
    const bool cut = end - p.offset >= cap || k + 1 == ps.size();
    if (cut) {
      const int64_t begin = k + 1 == ps.size() ? 0 : p.offset;
      buckets.push_back({begin, end, any ? ready : g.nodes.size() - 1});
      end = begin;
      ready = 0;
      any = false;
    }
  }
  std::stable_sort(buckets.begin(), buckets.end(), [](const Bucket& a, const Bucket& b) { return a.ready < b.ready; });
  return buckets;
}

void GradSync::begin_micro_batch(bool last) {
  armed_ = bucketed_ && last;
  next_ = 0;
}

void GradSync::after_node(size_t index) {
  if (armed_) issue(index);
}

void GradSync::issue(size_t upto) {
  for (; next_ < buckets_.size() && buckets_[next_].ready <= upto; ++next_)
    comm_.bucket_ready(grads_ + buckets_[next_].begin, buckets_[next_].end - buckets_[next_].begin);
}

void GradSync::finish() {
  if (bucketed_) {
    armed_ = false;
    issue(n_nodes_);
    comm_.finish_buckets();
  } else if (!shard_counts_.empty() && comm_.world() > 1) {
    comm_.reduce_scatter_sum(grads_, shard_counts_);
  }
}

}  // namespace loom
