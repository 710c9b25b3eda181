// trainer.h: the training loop (teacher forcing): data -> forward/backward -> all-reduce ->
// clip -> AdamW, with validation, metrics, progress, checkpoints and resume.
#pragma once
#include <string>

#include "engine/comm/comm.h"
#include "engine/train/config.h"
#include "engine/train/safetensors.h"

namespace loom {

struct TrainOptions {
  bool resume = false;   // continue from <run_dir>/latest
  Comm* comm = nullptr;  // null: single process
  bool quiet = false;    // no per-step lines (tests)
  int64_t stop_after = 0;
  // --profile-steps A:B: the profiler's capture window covers steps A..B (1-based, inclusive).
  int64_t profile_from = 0, profile_to = 0;
  int64_t stop_after_unused_ = 0;  // > 0: behave as if interrupted after this step (tests, preemption drills)
};

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0, last_val_loss = -1;
  std::string last_checkpoint;
  bool interrupted = false;  // stopped by SIGINT/SIGTERM after checkpointing
};

TrainResult train(const Config& cfg, const TrainOptions& opt = {});

// Validation loss over `batches` deterministic batches of the val split (windows of seq_len,
// each read from its start: no context before the window, the same for every kind). An ngram
// model is given by its counts instead of params.
double evaluate(const ModelConfig& model, const std::string& data_dir, const std::vector<float>& params,
                const std::string& device, int batch, int batches, uint64_t seed, const StFile* counts = nullptr);

}  // namespace loom
