// ops.h: op identifiers and per-op facts, generated from ops.def, and what one call of an op
// carries (OpCall). Below both the graph (which records ops) and the backends (which run
// them): a backend sees an op's id, attributes and tensor views, never the graph.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

#include "engine/tensor/tensor.h"

namespace loom {

enum class OpId : int {
#define LOOM_OP(name, n_in, n_out, n_diff) name,
#include "engine/ops/ops.def"
#undef LOOM_OP
};

struct OpInfo {
  const char* name;
  int n_in, n_out, n_diff_out;
};

inline constexpr OpInfo kOpInfo[] = {
#define LOOM_OP(name, n_in, n_out, n_diff) {#name, n_in, n_out, n_diff},
#include "engine/ops/ops.def"
#undef LOOM_OP
};
inline constexpr int kNumOps = static_cast<int>(sizeof(kOpInfo) / sizeof(kOpInfo[0]));
inline constexpr int kMaxOpIo = 8;
constexpr bool ops_fit_io() {
  for (const auto& o : kOpInfo)
    if (o.n_in > kMaxOpIo || o.n_out > kMaxOpIo || o.n_diff_out > o.n_out) return false;
  return true;
}
static_assert(ops_fit_io(), "an op in ops.def has more inputs/outputs than kMaxOpIo");

inline const OpInfo& op_info(OpId op) { return kOpInfo[static_cast<int>(op)]; }

// An op's scalar attributes (meaning per op in ops.def: i0 = n_head, f0 = eps, ...).
struct Attrs {
  std::array<int64_t, 4> i{};
  std::array<float, 2> f{};
};

// One op call as a backend receives it: the op, its attributes and a view of every input and
// output slot (an absent optional slot is a null view).
struct OpCall {
  OpId op{};
  Attrs attrs;
  std::array<TensorView, kMaxOpIo> in{}, out{};
};

}  // namespace loom
