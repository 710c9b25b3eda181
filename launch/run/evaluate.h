// evaluate.h: validation loss, the same for every kind: the mean over `batches` batches of the
// val split, drawn by a WindowLoader seeded afresh (the same windows every time), each window
// read from its start (no context before it: recurrent state zero, the feed-forward model's
// padding, the counting model's context cut at the window).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/data/shard.h"
#include "engine/graph/executor.h"
#include "engine/io/safetensors.h"
#include "models/model.h"

namespace loom {

// A graph kind's Eval graph on its executor (weights bound, recurrent state zero). Data
// parallelism: each rank takes its rows of every batch; the mean is over ranks.
double eval_graph(Executor& ex, const ModelGraph& mg, const Shard& val, uint64_t seed, int batches, Comm& comm);
// A counting kind's finalized model on batches of B windows of T tokens.
double eval_counts(const CountingModel& model, const Shard& val, int T, int B, int batches, uint64_t seed);

// `loom eval`: a checkpoint's model (params of a graph kind, `tensors` of a counting kind) on
// data_dir's val split. Pair kinds: evaluate_pairs (pair_eval.h).
double evaluate(const ModelConfig& model, const std::string& data_dir, const std::vector<float>& params,
                const StFile& tensors, const std::string& device, int batch, int batches, uint64_t seed);

}  // namespace loom
