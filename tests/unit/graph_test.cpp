// graph_test.cpp: the op tables, the graph builder, autodiff structure and the planner.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "engine/graph/executor.h"
#include "engine/graph/planner.h"
#include "models/model.h"

namespace loom {
namespace {

TEST(Ops, TableIsConsistent) {
  std::set<std::string> names;
  for (int i = 0; i < kNumOps; ++i) {
    EXPECT_TRUE(names.insert(kOpInfo[i].name).second) << "duplicate op " << kOpInfo[i].name;
    EXPECT_LE(kOpInfo[i].n_in, kMaxOpIo);
    EXPECT_LE(kOpInfo[i].n_out, kMaxOpIo);
    EXPECT_LE(kOpInfo[i].n_diff_out, kOpInfo[i].n_out);
  }
}

ModelConfig small() { return {.n_layer = 3, .n_head = 2, .d_model = 16, .seq_len = 8, .vocab = 40}; }

TEST(Graph, GptParamsAndGradients) {
  const ModelConfig c = small();
  ModelGraph m = build_model(c, GraphMode::Train, 2, 8, DType::F32);
  // wte, wpe, 12 per block, ln_f gain + bias
  EXPECT_EQ(m.g.params.size(), 2u + 12u * c.n_layer + 2u);
  const int64_t C = c.d_model;
  const int64_t expect = c.vocab * C + c.seq_len * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
  EXPECT_EQ(m.g.param_count, expect);
  EXPECT_EQ(count_params(c), expect);
  for (const auto& p : m.g.params) {
    EXPECT_GE(p.grad_value, 0) << p.name << " has no gradient";
    // Decay on weight matrices only.
    EXPECT_EQ(p.decay, p.shape.size() == 2) << p.name;
  }
  // Tied embedding: one parameter, read by the embedding and the classifier.
  int uses = 0;
  const int wte = m.g.params[m.g.find_param("wte")].value;
  for (size_t n = 0; n < m.g.forward_end; ++n)
    for (int v : m.g.nodes[n].in) uses += v == wte;
  EXPECT_EQ(uses, 2);
  EXPECT_GT(m.g.nodes.size(), m.g.forward_end);
}

TEST(Graph, FrozenParamGetsNoGradient) {
  Graph g;
  const int x = g.input("x", {4, 3}, DType::F32);
  const int w = g.param("w", {5, 3}, Init::Normal, 1, true);
  const int w2 = g.param("w2", {2, 5}, Init::Normal, 1, true);
  g.params[g.values[w].param].trainable = false;
  const int y = g.linear(g.linear(x, w), w2);
  const int seed = g.input("seed", {4, 2}, DType::F32);
  build_backward(g, {{y, seed}});
  EXPECT_LT(g.params[0].grad_value, 0);
  EXPECT_GE(g.params[1].grad_value, 0);
  // Nothing needs dx of the first linear: only one backward node, without a dx output.
  ASSERT_EQ(g.nodes.size() - g.forward_end, 1u);
  EXPECT_EQ(g.nodes.back().out[0], -1);
}

TEST(Planner, ReusesMemoryAndNeverOverlapsLiveValues) {
  ModelGraph m = build_model(small(), GraphMode::Train, 2, 8, DType::F32);
  const Plan p = plan_memory(m.g);
  EXPECT_GT(p.arena_bytes, 0u);
  EXPECT_LT(p.arena_bytes, p.total_bytes) << "no reuse at all";
  // Recompute liveness independently and check that no two simultaneously live values share bytes.
  const auto& g = m.g;
  const int nv = static_cast<int>(g.values.size()), end = static_cast<int>(g.nodes.size());
  std::vector<int> first(nv, end + 1), last(nv, -1);
  for (int n = 0; n < end; ++n) {
    for (int v : g.nodes[n].in)
      if (v >= 0) last[v] = std::max(last[v], n);
    for (int v : g.nodes[n].out)
      if (v >= 0) first[v] = std::min(first[v], n), last[v] = std::max(last[v], n);
  }
  for (int v = 0; v < nv; ++v)
    if (g.values[v].keep) first[v] = 0, last[v] = end;
  for (int a = 0; a < nv; ++a) {
    if (p.offset[a] == Plan::kNone) continue;
    EXPECT_EQ(p.offset[a] % kArenaAlign, 0u);
    EXPECT_LE(p.offset[a] + g.values[a].bytes(), p.arena_bytes);
    for (int b = a + 1; b < nv; ++b) {
      if (p.offset[b] == Plan::kNone) continue;
      const bool time = !(last[a] < first[b] || last[b] < first[a]);
      const bool space = p.offset[a] < p.offset[b] + g.values[b].bytes() && p.offset[b] < p.offset[a] + g.values[a].bytes();
      if (time && space) {
        // The only allowed sharing: an op's declared in-place output over its dying input.
        bool inplace = false;
        for (const Node& n : g.nodes)
          if (n.op == OpId::softmax_xent_bwd && ((n.out[0] == a && n.in[1] == b) || (n.out[0] == b && n.in[1] == a)))
            inplace = true;
        EXPECT_TRUE(inplace) << g.values[a].name << " and " << g.values[b].name << " overlap while both live";
      }
    }
  }
}

TEST(Executor, ArenaIsPoisoned) {
  // An op reading memory nobody wrote must see NaN, never a plausible zero.
  Graph g;
  const int x = g.input("x", {2, 3}, DType::F32);
  const int w = g.param("w", {3, 3}, Init::Normal, 1, true);
  const int y = g.linear(x, w);
  g.mark_output(y);
  auto be = make_cpu_backend();
  Executor ex(g, *be);
  std::vector<float> params(9, 0.5f);
  ex.bind_params(params.data(), nullptr);
  const auto before = ex.fetch<float>(y);
  for (float v : before) EXPECT_TRUE(std::isnan(v));
  std::vector<float> xs = {1, 2, 3, 4, 5, 6};
  ex.set_input(x, xs.data(), 24);
  ex.forward();
  const auto after = ex.fetch<float>(y);
  EXPECT_FLOAT_EQ(after[0], 3.0f);
  EXPECT_FLOAT_EQ(after[5], 7.5f);
}

}  // namespace
}  // namespace loom
