// ops.h: op identifiers and per-op facts (names, slot names, arities), generated from ops.def,
// and what one call of an op carries (OpCall). Below both the graph (which records ops) and
// the backends (which run them): a backend sees an op's id, attributes and tensor views, never
// the graph.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/tensor/tensor.h"

namespace loom {

enum class OpId : int {
#define LOOM_OP(name, in, out, n_diff) name,
#include "engine/ops/ops.def"
#undef LOOM_OP
};

inline constexpr int kMaxOpIo = 9;  // recurrent_bwd reads 9

// The slot names of one side of an op, split at compile time from ops.def's "(x, g, b)".
struct OpSlots {
  std::array<std::string_view, kMaxOpIo> name{};
  int count = 0;
};

consteval OpSlots split_op_slots(std::string_view list) {
  OpSlots s;
  auto trim = [](std::string_view v) {
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
  };
  while (!list.empty()) {
    const size_t comma = list.find(',');
    // More than kMaxOpIo names indexes past the array: not a constant expression, so the
    // build fails at this line.
    s.name[s.count++] = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return s;
}

struct OpInfo {
  const char* name;
  int n_in, n_out, n_diff_out;
  OpSlots in, out;  // slot names: in.name[i] names OpCall::in[i] and Node::in[i]
};

#define LOOM_OP_SLOTS_(...) ::loom::split_op_slots(#__VA_ARGS__)
inline constexpr OpInfo kOpInfo[] = {
#define LOOM_OP(name, in, out, n_diff) \
  {#name, LOOM_OP_SLOTS_ in.count, LOOM_OP_SLOTS_ out.count, n_diff, LOOM_OP_SLOTS_ in, LOOM_OP_SLOTS_ out},
#include "engine/ops/ops.def"
#undef LOOM_OP
};
#undef LOOM_OP_SLOTS_
inline constexpr int kNumOps = static_cast<int>(sizeof(kOpInfo) / sizeof(kOpInfo[0]));

// Every name a C identifier and unique on its side of the op (graph error messages and the
// per-op tests name slots by them); gradient-carrying outputs a prefix of the outputs.
constexpr bool valid_slots(const OpSlots& s) {
  if (s.count < 1) return false;
  for (int i = 0; i < s.count; ++i) {
    const std::string_view n = s.name[i];
    if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
    for (char ch : n)
      if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')))
        return false;
    for (int j = 0; j < i; ++j)
      if (s.name[j] == n) return false;
  }
  return true;
}
constexpr bool valid_op_list() {
  for (const auto& o : kOpInfo)
    if (!valid_slots(o.in) || !valid_slots(o.out) || o.n_in != o.in.count || o.n_out != o.out.count ||
        o.n_diff_out < 0 || o.n_diff_out > o.n_out)
      return false;
  return true;
}
static_assert(valid_op_list(), "ops.def: an op's slot names are empty, repeated or not identifiers, or n_diff_out "
                               "exceeds its outputs");

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
