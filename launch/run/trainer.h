// trainer.h: `loom train`: the run loop (teacher forcing) over any model kind: data ->
// the kind's learner (forward/backward -> all-reduce -> clip -> AdamW, or counting) ->
// validation, metrics, progress, checkpoints, signals and resume (launch/run/run_folder.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"

namespace loom {

struct TrainOptions {
  bool resume = false;   // continue from <run_dir>/latest
  Comm* comm = nullptr;  // null: single process
  bool quiet = false;    // no per-step lines (tests)
  // > 0: behave as if interrupted after this step (tests, preemption drills).
  int64_t stop_after = 0;
  // --profile-steps A:B: the profiler's capture window covers steps A..B (1-based, inclusive).
  int64_t profile_from = 0, profile_to = 0;
  // A fresh run that starts from this state instead of the seeded initialisation (loom
  // finetune: a base model's weights and new adapters); ignored with `resume`.
  const CheckpointData* start = nullptr;
  // Fault drills (tests): these steps' loss is made non-finite on this rank, as a diverging
  // rank's would be (LOOM_FAULT_NONFINITE=RANK:STEP[,STEP...] in the CLI).
  int fault_rank = -1;
  std::vector<int64_t> fault_steps;
};

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0, last_val_loss = -1;
  std::string last_checkpoint;
  bool interrupted = false;  // stopped by SIGINT/SIGTERM after checkpointing
};

TrainResult train(const Config& cfg, const TrainOptions& opt = {});

}  // namespace loom
