// recompute.h: activation recomputation (gradient checkpointing, Chen et al. 2016) as a graph
// rewrite after autodiff. The forward nodes of a segment (a transformer block's attention
// sublayer, its MLP, or both) are cloned into the backward pass, right before the first
// backward node that reads what they computed, and those backward nodes read the clones'
// outputs instead. The planner's liveness then frees the originals after their last forward
// use, so between forward and backward only the segments' checkpoints stay in the arena: the
// values a segment hands to forward nodes outside it, the graph's kept outputs, and every
// output of a node that produces one of those (a boundary node runs once, so its small
// statistics are kept rather than recomputed through the whole segment).
//
// The clones are ordinary backward nodes: the executor needs no change, and on a backend whose
// ops are deterministic (the CPU) losses and gradients are bit-identical to the graph without
// recomputation, since every clone reads the same inputs as its original.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include "engine/graph/graph.h"

namespace loom {

// train.recompute: which segments a model kind re-runs in backward (ModelKind::recompute_segment).
enum class Recompute { None, Attention, Mlp, Block };
inline constexpr Recompute kRecomputeSettings[] = {Recompute::None, Recompute::Attention, Recompute::Mlp,
                                                   Recompute::Block};

const char* recompute_name(Recompute r);                      // "none", "attention", "mlp", "block"
std::optional<Recompute> parse_recompute(const std::string& s);  // nullopt when not a name above

struct RecomputeStats {
  int segments = 0;     // segments that had something to recompute
  int cloned = 0;       // forward nodes cloned into backward
};

// Rewrites a differentiated graph (forward_end set, backward nodes appended). `segment_of`
// names the segment of a forward node from its scope ("" = in none: its outputs are kept).
// Backward nodes that read a segment's non-checkpoint values get them from clones inserted
// before the first such reader; the clones keep the original's scope with ".recompute"
// appended (profiling ranges). Returns what it cloned.
RecomputeStats recompute_segments(Graph& g, const std::function<std::string(const std::string& scope)>& segment_of);

}  // namespace loom
