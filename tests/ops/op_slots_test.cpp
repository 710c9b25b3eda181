// op_slots_test.cpp: the slot names ops.def gives every op, and the graph errors that use them.
// A graph-building bug (a wrong arity, an activation read before it is written, a slot with
// no memory) must name the op and the slot, not just a value id.
#include <gtest/gtest.h>

#include <vector>

#include "engine/backend/backend.h"
#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/graph/planner.h"

namespace loom {
namespace {

std::vector<std::string_view> names(const OpSlots& s) { return {s.name.begin(), s.name.begin() + s.count}; }

TEST(OpSlots, ReadAsWrittenInOpsDef) {
  const OpInfo& ln = op_info(OpId::layernorm);
  EXPECT_EQ(names(ln.in), (std::vector<std::string_view>{"x", "g", "b"}));
  EXPECT_EQ(names(ln.out), (std::vector<std::string_view>{"y", "mean", "rstd"}));
  EXPECT_EQ(ln.n_in, 3);
  EXPECT_EQ(ln.n_out, 3);
  EXPECT_EQ(ln.n_diff_out, 1);
  const OpInfo& rb = op_info(OpId::recurrent_bwd);
  EXPECT_EQ(rb.n_in, 9);
  EXPECT_EQ(rb.in.name[6], "saved");
  EXPECT_EQ(rb.in.name[8], "len");
  EXPECT_EQ(rb.out.name[5], "dstate0");
  // Unused entries stay empty: nothing past the arity.
  for (const auto& o : kOpInfo)
    for (int i = o.n_in; i < kMaxOpIo; ++i) EXPECT_TRUE(o.in.name[i].empty()) << o.name;
}

TEST(OpSlotsDeathTest, AddNodeNamesTheSlotsOfAWrongArity) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Graph g;
  const int x = g.input("x", {2, 4}, DType::F32);
  EXPECT_DEATH(g.add_node(OpId::gelu, {x, x}, {}), "gelu takes 1 inputs \\(x\\), given 2");
  EXPECT_DEATH(g.add_node(OpId::gelu, {x}, {x, x}), "gelu has 1 outputs \\(y\\), given 2");
  EXPECT_DEATH(g.add_node(OpId::layernorm, {x, 99}, {}), "input g of layernorm: no value 99");
}

TEST(OpSlotsDeathTest, PlannerNamesAnActivationReadBeforeItIsWritten) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Graph g;
  g.set_scope("h.0");
  const int x = g.input("x", {3, 8}, DType::F32);
  const int gain = g.param("g", {8}, Init::Ones, 0, false);
  const int never_written = g.new_value("h.0.b", {8}, DType::F32);
  g.layernorm(x, gain, never_written);
  EXPECT_DEATH(plan_memory(g),
               "input b of layernorm \\(node 0, scope h.0, value h.0.b\\) reads an activation that no earlier node "
               "writes");
}

TEST(OpSlotsDeathTest, ExecutorNamesAnUnboundSlot) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Graph g;
  const int x = g.input("x", {3, 8}, DType::F32);
  const int w = g.param("w", {5, 8}, Init::Normal, 0.02f, true);
  const int y = g.linear(x, w);
  const int seed = g.input("dy", {3, 5}, DType::F32);
  g.mark_output(y);
  build_backward(g, {{y, seed}});
  auto be = make_cpu_backend();
  Executor ex(g, *be);
  std::vector<float> params(g.param_count);
  // A graph with backward nodes bound without a gradient buffer: linear_bwd's dw has no memory.
  EXPECT_DEATH(ex.bind_params(params.data(), nullptr), "unbound output dw of linear_bwd \\(node 1, value grad.w\\)");
}

}  // namespace
}  // namespace loom
