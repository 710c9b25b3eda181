// planner.cpp: liveness analysis and greedy-by-size placement (the strategy of TFLite's
// arena planner): the largest buffers are placed first, each at the lowest offset that does
// not collide with an already placed buffer whose lifetime overlaps.
#include "engine/graph/planner.h"

#include <algorithm>
#include <climits>

namespace loom {

namespace {
size_t align_up(size_t n) { return (n + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }

// Ops whose kernel may write an output over one of its inputs (output slot -> input slot).
int inplace_input(OpId op, int out_slot) {
  if (op == OpId::softmax_xent_bwd && out_slot == 0) return 1;  // dlogits over logits
  return -1;
}
}  // namespace

Plan plan_memory(const Graph& g) {
  const int nv = static_cast<int>(g.values.size());
  const int end = static_cast<int>(g.nodes.size());
  std::vector<int> first(nv, INT_MAX), last(nv, -1), root(nv);
  for (int v = 0; v < nv; ++v) root[v] = v;
  for (int n = 0; n < end; ++n) {
    const Node& node = g.nodes[n];
    for (int i = 0; i < static_cast<int>(node.in.size()); ++i) {
      const int v = node.in[i];
      if (v < 0) continue;
      // An activation exists only once a node writes it: reading one earlier would read
      // whatever the arena holds (a graph-building bug, not a plan).
      LOOM_CHECK(g.values[v].kind != ValueKind::Activation || first[v] < n, describe_slot(g, n, true, i),
                 " reads an activation that no earlier node writes");
      last[v] = std::max(last[v], n);
    }
    for (int v : node.out)
      if (v >= 0) first[v] = std::min(first[v], n), last[v] = std::max(last[v], n);
  }
  // Kept values (graph outputs, requested gradients) own their bytes for the whole run: the
  // caller reads them later, possibly after running only the forward part again.
  for (int v = 0; v < nv; ++v)
    if (g.values[v].keep && last[v] >= 0) first[v] = 0, last[v] = end;

  auto in_arena = [&](int v) { return g.values[v].kind == ValueKind::Activation && last[v] >= 0; };

  // In-place pairs: the output takes over the input's buffer when the input dies right there.
  for (int n = 0; n < end; ++n) {
    const Node& node = g.nodes[n];
    for (int o = 0; o < static_cast<int>(node.out.size()); ++o) {
      const int i = inplace_input(node.op, o);
      if (i < 0) continue;
      const int vi = node.in[i], vo = node.out[o];
      if (vi < 0 || vo < 0 || !in_arena(vi) || !in_arena(vo)) continue;
      if (last[vi] != n || g.values[vi].keep || g.values[vi].bytes() != g.values[vo].bytes()) continue;
      int r = vi;
      while (root[r] != r) r = root[r];
      root[vo] = r;
    }
  }

  // One buffer per root, living from the first write of any member to the last read.
  struct Buf {
    int root;
    size_t bytes;
    int first, last;
    size_t offset;
  };
  std::vector<int> buf_of(nv, -1);
  std::vector<Buf> bufs;
  Plan plan;
  plan.offset.assign(nv, Plan::kNone);
  for (int v = 0; v < nv; ++v) {
    if (!in_arena(v)) continue;
    int r = v;
    while (root[r] != r) r = root[r];
    if (buf_of[r] < 0) {
      buf_of[r] = static_cast<int>(bufs.size());
      bufs.push_back({r, align_up(g.values[r].bytes()), first[r], last[r], 0});
      plan.total_bytes += bufs.back().bytes;
    }
    Buf& b = bufs[buf_of[r]];
    b.first = std::min(b.first, first[v]);
    b.last = std::max(b.last, last[v]);
    buf_of[v] = buf_of[r];
  }

  std::vector<int> order(bufs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return bufs[a].bytes > bufs[b].bytes; });
  std::vector<int> placed;  // kept sorted by offset
  for (int bi : order) {
    Buf& b = bufs[bi];
    size_t off = 0;
    for (int pi : placed) {
      const Buf& p = bufs[pi];
      const bool overlap_time = !(p.last < b.first || b.last < p.first);
      if (!overlap_time) continue;
      if (off + b.bytes <= p.offset) break;  // fits in the gap before p
      off = std::max(off, p.offset + p.bytes);
    }
    b.offset = off;
    plan.arena_bytes = std::max(plan.arena_bytes, off + b.bytes);
    placed.insert(std::upper_bound(placed.begin(), placed.end(), bi,
                                   [&](int x, int y) { return bufs[x].offset < bufs[y].offset; }),
                  bi);
  }
  for (int v = 0; v < nv; ++v)
    if (buf_of[v] >= 0) plan.offset[v] = bufs[buf_of[v]].offset;
  return plan;
}

}  // namespace loom
