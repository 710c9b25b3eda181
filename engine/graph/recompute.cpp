// recompute.cpp: see recompute.h. Three passes over the differentiated graph: find each
// segment's checkpoints, mark the forward nodes whose outputs backward reads (and what they
// need, inside the segment), then rebuild the node list with those nodes cloned before the
// segment's first backward reader.
#include "engine/graph/recompute.h"

#include <algorithm>
#include <climits>
#include <map>

namespace loom {

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Attention: return "attention";
    case Recompute::Mlp: return "mlp";
    case Recompute::Block: return "block";
  }
  return "?";
}

std::optional<Recompute> parse_recompute(const std::string& s) {
  for (Recompute r : kRecomputeSettings)
    if (s == recompute_name(r)) return r;
  return std::nullopt;
}

RecomputeStats recompute_segments(Graph& g, const std::function<std::string(const std::string& scope)>& segment_of) {
  RecomputeStats stats;
  const int fe = static_cast<int>(g.forward_end), end = static_cast<int>(g.nodes.size());
  if (fe == 0 || fe >= end) return stats;  // no backward pass: nothing is kept for it
  const int nv = static_cast<int>(g.values.size());

  // Segment of every forward node (-1: none).
  std::map<std::string, int> ids;
  std::vector<int> seg(fe, -1);
  for (int n = 0; n < fe; ++n) {
    const std::string s = segment_of(g.nodes[n].scope);
    if (!s.empty()) seg[n] = ids.emplace(s, static_cast<int>(ids.size())).first->second;
  }
  if (ids.empty()) return stats;
  std::vector<int> producer(nv, -1);
  for (int n = 0; n < fe; ++n)
    for (int v : g.nodes[n].out)
      if (v >= 0) producer[v] = n;
  auto seg_of_value = [&](int v) { return v >= 0 && producer[v] >= 0 ? seg[producer[v]] : -1; };

  // Checkpoints: what a segment hands to forward nodes outside it (or to the caller), and then
  // every output of a node that produces one: that node runs in forward anyway, so its other
  // outputs (a layer norm's mean and rstd beside the residual stream) are kept, not re-derived.
  std::vector<char> ckpt(nv, 0);
  for (int n = 0; n < fe; ++n)
    for (int v : g.nodes[n].in)
      if (seg_of_value(v) >= 0 && seg_of_value(v) != seg[n]) ckpt[v] = 1;
  for (int v = 0; v < nv; ++v)
    if (g.values[v].keep && seg_of_value(v) >= 0) ckpt[v] = 1;
  for (int n = 0; n < fe; ++n) {
    if (seg[n] < 0) continue;
    const auto& out = g.nodes[n].out;
    if (std::any_of(out.begin(), out.end(), [&](int v) { return v >= 0 && ckpt[v]; }))
      for (int v : out)
        if (v >= 0) ckpt[v] = 1;
  }
  auto recomputed = [&](int v) { return seg_of_value(v) >= 0 && !ckpt[v]; };

  // The forward nodes to clone: producers of what backward reads, and inside the segment what
  // those read in turn (a value from another segment is a checkpoint, so this stays inside).
  std::vector<char> needed(fe, 0);
  std::vector<int> first_reader(ids.size(), INT_MAX);
  std::vector<int> stack;
  for (int k = fe; k < end; ++k)
    for (int v : g.nodes[k].in) {
      if (!recomputed(v)) continue;
      first_reader[seg_of_value(v)] = std::min(first_reader[seg_of_value(v)], k);
      stack.push_back(producer[v]);
    }
  while (!stack.empty()) {
    const int n = stack.back();
    stack.pop_back();
    if (needed[n]) continue;
    needed[n] = 1;
    for (int v : g.nodes[n].in)
      if (recomputed(v)) stack.push_back(producer[v]);
  }

  // Rebuild: the forward pass unchanged; before each backward node the clones of the segments
  // whose first reader it is (in forward order), then the node reading the clones' values.
  std::vector<std::vector<int>> clones_at(end);
  for (int n = 0; n < fe; ++n)
    if (needed[n]) clones_at[first_reader[seg[n]]].push_back(n);
  std::vector<Node> nodes(g.nodes.begin(), g.nodes.begin() + fe);
  nodes.reserve(g.nodes.size() + fe);
  std::vector<int> clone(nv, -1);
  std::vector<char> seen(ids.size(), 0);
  for (int k = fe; k < end; ++k) {
    for (int n : clones_at[k]) {
      Node c = g.nodes[n];
      for (int& v : c.in)
        if (recomputed(v)) {
          LOOM_CHECK(clone[v] >= 0, "recompute: ", describe_slot(g, n, true, static_cast<int>(&v - c.in.data())),
                     " reads a value that is not recomputed before it");
          v = clone[v];
        }
      for (int& v : c.out) {
        if (v < 0) continue;
        // Re-running a node that writes a caller's buffer (a cache input) or a parameter would
        // write it twice; only arena activations can be recomputed.
        LOOM_CHECK(g.values[v].kind == ValueKind::Activation, "recompute: ",
                   describe_slot(g, n, false, static_cast<int>(&v - c.out.data())), " is not an activation");
        Value copy = g.values[v];
        copy.name = "recompute." + copy.name;
        copy.keep = false;
        g.values.push_back(std::move(copy));
        clone[v] = static_cast<int>(g.values.size()) - 1;
        v = clone[v];
      }
      c.scope += ".recompute";
      nodes.push_back(std::move(c));
      ++stats.cloned;
      if (!seen[seg[n]]) seen[seg[n]] = 1, ++stats.segments;
    }
    Node b = g.nodes[k];
    for (int& v : b.in)
      if (v >= 0 && v < nv && recomputed(v)) v = clone[v];
    nodes.push_back(std::move(b));
  }
  g.nodes = std::move(nodes);
  return stats;
}

}  // namespace loom
