// planner.h: places every activation and activation gradient of a graph in one arena.
// Liveness is [first write, last read] in node order; values whose lifetimes do not overlap
// share bytes (greedy by size, first fit). Graph outputs (`keep`) stay live to the end.
#pragma once
#include <cstddef>
#include <vector>

#include "engine/graph/graph.h"

namespace loom {

struct Plan {
  static constexpr size_t kNone = static_cast<size_t>(-1);
  std::vector<size_t> offset;  // per value: byte offset in the arena, kNone if not in it
  size_t arena_bytes = 0;      // peak: the arena's size
  size_t total_bytes = 0;      // what the same values would take without reuse
};

inline constexpr size_t kArenaAlign = 64;

Plan plan_memory(const Graph& g);

}  // namespace loom
