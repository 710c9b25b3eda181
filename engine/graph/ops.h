// ops.h: op identifiers and per-op facts, generated from ops.def.
#pragma once
#include <cstddef>

namespace loom {

enum class OpId : int {
#define LOOM_OP(name, n_in, n_out, n_diff) name,
#include "engine/graph/ops.def"
#undef LOOM_OP
};

struct OpInfo {
  const char* name;
  int n_in, n_out, n_diff_out;
};

inline constexpr OpInfo kOpInfo[] = {
#define LOOM_OP(name, n_in, n_out, n_diff) {#name, n_in, n_out, n_diff},
#include "engine/graph/ops.def"
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

}  // namespace loom
