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
inline constexpr int kMaxOpIo = 5;

inline const OpInfo& op_info(OpId op) { return kOpInfo[static_cast<int>(op)]; }

}  // namespace loom
