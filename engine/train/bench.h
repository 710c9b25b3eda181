// bench.h: `loom bench train`: the training step on random tokens, timed after warm-up.
#pragma once
#include <string>

#include "models/model.h"

namespace loom {

struct BenchTrainOptions {
  std::string device = "cpu";
  ModelConfig model;
  int batch = 4;
  int steps = 10;
  int warmup = 2;
};

struct BenchTrainResult {
  double median_ms = 0, tokens_per_s = 0, gflops = 0, flops_per_token = 0;
  double gemm_gflops = 0;  // the device's matrix-product ceiling, measured in the same run
  int64_t params = 0;
};

BenchTrainResult bench_train(const BenchTrainOptions& o);

}  // namespace loom
