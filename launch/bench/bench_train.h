// bench_train.h: `loom bench train`: the training step on random tokens, timed after warm-up.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"

namespace loom {

struct BenchTrainOptions {
  std::string device = "cpu";
  ModelConfig model;
  int batch = 4;
  int steps = 10;
  int warmup = 2;
  bool op_profile = false;  // time every op kind (host clock; CPU backend)
  Recompute recompute = Recompute::None;  // train.recompute's setting for the step's graph
};

struct BenchTrainResult {
  double median_ms = 0, tokens_per_s = 0, gflops = 0, flops_per_token = 0;
  double gemm_gflops = 0;  // CPU: the matrix-product ceiling measured in the same run
  double stream_gbs = 0;   // CPU: the memory bandwidth measured in the same run (STREAM triad)
  double optimizer_bytes = 0;  // bytes a step's optimizer must move: zero, norm and AdamW passes
  double mfu = 0;          // model FLOPs utilisation (NaN: the device's peak is unknown)
  std::string peak;        // where the peak comes from (engine/backend/peak.h)
  int64_t params = 0;
  size_t arena_bytes = 0;  // the planner's peak for the step's graph (activations and their gradients)
  std::vector<std::pair<std::string, double>> op_ms;  // per op kind (and optimizer pass), ms per step, largest first
  // The share of the ceiling a step could reach at most: every FLOP at the sgemm ceiling plus
  // the optimizer's bytes at the measured bandwidth (0 when not measured).
  double bound_share() const;
};

BenchTrainResult bench_train(const BenchTrainOptions& o);

}  // namespace loom
